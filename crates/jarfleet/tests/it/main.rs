//! Integration tests: real `jarfleet` binary, real JVMs running the fixture app built from
//! `fixtures/app`, real sockets on 127.0.0.1. One test binary; see `harness`.

/// The etcd test server of the etcd crate's tests.
#[path = "../../../etcd/tests/helper/mod.rs"]
mod etcd_helper;
mod fixture;
mod harness;
/// The local HTTPS server with a test CA of the fetch crate's tests.
#[allow(dead_code)]
#[path = "../../../fetch/tests/server/mod.rs"]
mod https_server;

mod api;
mod api_limits;
mod balancer;
mod canary;
mod cluster;
mod cluster_canary;
mod cluster_rollout;
mod cluster_tls;
mod config;
mod crashes;
mod dashboard;
mod deploy;
mod deploy_commands;
mod disk_full;
mod drain_under_load;
mod errors;
mod etcd;
mod export;
mod faststart;
mod fd_shortage;
mod foreground;
mod front_door;
mod hung;
mod install;
mod kill_under_load;
mod listener_retry;
mod logs;
mod metrics;
mod privsep;
mod readopt;
mod release_id;
mod reload;
mod remote;
mod remote_api;
mod store_loss;
mod supervise;
mod terminal;
mod trust;
mod websocket;
