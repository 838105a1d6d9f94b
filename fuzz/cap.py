#!/usr/bin/env python3
"""Keeps at most MAX files of an afl-cmin output: greedily the file that covers the most edges
not yet covered (ties: the smaller file), until MAX files or every edge is covered.

usage: cap.py MAX CORPUS_DIR MAPS_DIR   (MAPS_DIR from `afl-showmap -i CORPUS_DIR -o MAPS_DIR`)
Deletes the files it does not keep from CORPUS_DIR."""

import os
import sys


def main():
    limit, corpus, maps = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    edges = {}
    for name in os.listdir(corpus):
        path = os.path.join(maps, name)
        if os.path.exists(path):
            with open(path) as f:
                edges[name] = {line.split(":")[0] for line in f if line.strip()}
        else:
            edges[name] = set()
    size = {n: os.path.getsize(os.path.join(corpus, n)) for n in edges}
    covered, keep = set(), []
    while len(keep) < limit:
        best = max(edges, key=lambda n: (len(edges[n] - covered), -size[n]), default=None)
        if best is None or not edges[best] - covered:
            break
        covered |= edges.pop(best)
        keep.append(best)
    for name in os.listdir(corpus):
        if name not in keep:
            os.remove(os.path.join(corpus, name))
    total = len(set().union(covered, *edges.values()))
    print(f"kept {len(keep)} files covering {len(covered)} of {total} edges")


if __name__ == "__main__":
    main()
