//! The test bed: simulators of the chat servers alertbridge talks to, and the harness the
//! end-to-end tests use to run the real host with real plugin files.

pub mod alertmanager;
pub mod browser;
pub mod dovecot;
pub mod ha;
pub mod harness;
pub mod incident_bed;
pub mod pop3_server;
pub mod postgres;
pub mod servers;
pub mod sink_bed;
pub mod ucma_bed;
pub mod ucma_sim;
pub mod ucwa_sim;
