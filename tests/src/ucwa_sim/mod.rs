//! A UCWA server simulator (Lync Server 2013 / Skype for Business Server 2015, speaking the
//! Unified Communications Web API 2.0 as those servers do) for tests and the demo: autodiscover, the
//! MsRtcOAuth challenge and password grant, applications, presence, messaging invitations over
//! the event channel (outgoing, and incoming ones people start or reply with), and a control
//! API plus a status page.
//!
//! Start it in-process with [`Simulator::start`], or run the `ucwa-sim` binary.

mod application;
mod auth;
mod autodiscover;
mod batch;
mod control;
mod events;
mod inbound;
mod messaging;
mod people;
mod server;
mod state;

pub use self::{
    control::Stats,
    inbound::{Replied, Reply, ReplyError},
    messaging::decode_data_url,
    server::{SimHandle, Simulator, StartError},
    state::{
        Behaviour, ReceivedIm, SimConfig, SimOptions, UserSpec, UsersFileError, load_users,
        parse_users,
    },
};
