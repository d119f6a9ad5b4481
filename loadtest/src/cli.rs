//! The command line: run options for a scenario, plus the hidden `worker` and `floor-server`
//! subcommands the parent uses to re-execute itself.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

use crate::feed::{Mode, Target};

/// Most servers (cluster nodes) one run loads.
pub const MAX_SERVERS: usize = 64;

/// halley-load: C10K long-poll / SSE load generator for Halley and nginx + Nchan (loopback only).
#[derive(Debug, Parser)]
#[command(name = "halley-load", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub internal: Option<Internal>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands the parent starts; not for people.
#[derive(Debug, Subcommand)]
pub enum Internal {
    /// Hold subscribers as told by the plan on stdin.
    #[command(hide = true)]
    Worker,
    /// Run the floor server.
    #[command(hide = true)]
    FloorServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Open N subscribers, wait until parked, measure set-up and memory, hold.
    Idle,
    /// N subscribers on one topic; publish K messages one at a time; fan-out time per message.
    Broadcast,
    /// N subscribers on one topic; publish at R/s for T s from P connections.
    Rate,
    /// N subscribers each on its own topic; publish to random topics at R/s.
    PerUser,
    /// Like `rate`, with subscribers disconnecting and reconnecting (cursor kept) at C/s.
    Churn,
    /// Run `--pattern` against the built-in floor server instead of `--addr`.
    Floor,
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct RunArgs {
    /// Scenario to run.
    #[arg(long, short = 's', value_enum, default_value = "broadcast")]
    pub scenario: Scenario,
    /// With `--scenario floor`: the scenario whose pattern the floor server serves.
    #[arg(long, value_enum, default_value = "broadcast")]
    pub pattern: Scenario,
    /// Server address (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Several servers (cluster nodes), comma-separated or repeated; overrides `--addr`.
    /// Subscriber i goes to node i mod N, publisher connection j to node j mod N.
    #[arg(long = "server", value_delimiter = ',', value_name = "ADDR")]
    pub servers: Vec<String>,
    /// API flavour of the server.
    #[arg(long, value_enum, default_value = "halley")]
    pub target: Target,
    /// Subscriber mode.
    #[arg(long, value_enum, default_value = "longpoll")]
    pub mode: Mode,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: u32,
    /// Messages to broadcast (broadcast scenario).
    #[arg(long, short = 'k', default_value_t = 100)]
    pub messages: u32,
    /// Publish rate, messages per second (rate, per-user, churn).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds to publish (rate, per-user, churn) or hold (idle).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Publisher connections.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Reconnects per second (churn).
    #[arg(long, default_value_t = 100.0)]
    pub churn_rate: f64,
    /// Filler bytes per message.
    #[arg(long, default_value_t = 64)]
    pub pad: usize,
    /// Topic for single-topic scenarios (prefix for per-user).
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Publisher location prefix.
    #[arg(long, default_value = "/pub")]
    pub pub_path: String,
    /// Subscriber location prefix.
    #[arg(long, default_value = "/sub")]
    pub sub_path: String,
    /// Halley long-poll `timeout=` seconds (0: server default).
    #[arg(long, default_value_t = 120)]
    pub poll_timeout: u32,
    /// Child processes holding subscribers (0: enough for the open-file cap).
    #[arg(long, default_value_t = 0)]
    pub processes: u32,
    /// Event-loop threads per child (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
    /// Source addresses 127.0.0.1..=127.0.0.N.
    #[arg(long, default_value_t = 8)]
    pub source_addrs: u8,
    /// Connects in flight per child.
    #[arg(long, default_value_t = 512)]
    pub connect_concurrency: u32,
    /// Server pid for CPU and memory readings (default: found by the listening port); with
    /// several `--server`s, one per node in the same order (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Pid of the Redis server the nodes share: its CPU and RSS are reported beside theirs.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Deadline for connecting (and warming up) every subscriber, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Deadline for deliveries after the last publish, seconds (also per broadcast message).
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout: f64,
    /// Threads of the floor server (floor scenario).
    #[arg(long, default_value_t = 2)]
    pub floor_threads: usize,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Speak TLS to the server (subscribers and publishers); needs --ca or --insecure.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: PEM file of the CA that signed the server's certificate.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<std::path::PathBuf>,
    /// With --tls: accept any server certificate (the load box talks only to loopback).
    #[arg(long)]
    pub insecure: bool,
    /// With --tls: the server name sent (SNI) and verified.
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
    /// Write a report with charts: `.svg` or `.html`.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

impl RunArgs {
    /// Check the numbers before anything starts; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.subscribers == 0 {
            return Err("--subscribers must be at least 1".into());
        }
        if self.scenario == Scenario::Floor && self.pattern == Scenario::Floor {
            return Err("--pattern must name a scenario other than floor".into());
        }
        if self.scenario == Scenario::Floor && !matches!(self.mode, Mode::Longpoll | Mode::Sse) {
            return Err("the floor server serves --mode longpoll and sse only".into());
        }
        if self.target == Target::Nchan && self.mode == Mode::Stream {
            return Err("Nchan has no ndjson stream: use --mode longpoll, sse or ws with --target nchan".into());
        }
        if self.target == Target::Nchan && self.mode.is_session() {
            return Err(
                "Nchan speaks neither Pushlet nor Bayeux: --mode pushlet and bayeux are for --target halley".into()
            );
        }
        let publishing = matches!(self.effective(), Scenario::Rate | Scenario::PerUser | Scenario::Churn);
        if publishing && !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            return Err("--rate must be in (0, 1000000]".into());
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be in (0, 3600] seconds".into());
        }
        if self.publishers == 0 || self.publishers as usize > crate::stamp::MAX_PUBLISHERS {
            return Err(format!("--publishers must be in 1..={}", crate::stamp::MAX_PUBLISHERS));
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(format!("at most {MAX_SERVERS} --server addresses"));
        }
        if !self.server_pid.is_empty() && self.server_pid.len() != self.addrs().len() {
            return Err(format!(
                "{} --server-pid for {} servers: give one per server, in the same order",
                self.server_pid.len(),
                self.addrs().len()
            ));
        }
        if self.scenario == Scenario::Floor && !self.servers.is_empty() {
            return Err("--scenario floor runs its own server: no --server".into());
        }
        if self.source_addrs == 0 || self.source_addrs > 254 {
            return Err("--source-addrs must be in 1..=254".into());
        }
        let in_range = |s: f64| s > 0.0 && s <= 3600.0;
        if !in_range(self.connect_timeout) || !in_range(self.drain_timeout) {
            return Err("timeouts must be in (0, 3600] seconds".into());
        }
        if self.messages > 1_000_000 {
            return Err("--messages must be at most 1000000".into());
        }
        if self.pad > 1024 * 1024 {
            return Err("--pad must be at most 1 MiB".into());
        }
        if self.effective() == Scenario::Churn && !(self.churn_rate > 0.0 && self.churn_rate <= 1_000_000.0) {
            return Err("--churn-rate must be in (0, 1000000]".into());
        }
        Ok(())
    }

    /// The server addresses to load: the `--server` list, or `--addr` alone.
    pub fn addrs(&self) -> Vec<String> {
        if self.servers.is_empty() {
            vec![self.addr.clone()]
        } else {
            self.servers.clone()
        }
    }

    /// The scenario whose pattern runs (the floor runs its `--pattern`).
    pub fn effective(&self) -> Scenario {
        if self.scenario == Scenario::Floor {
            self.pattern
        } else {
            self.scenario
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("halley-load").chain(args.iter().copied())).expect("parses")
    }

    #[test]
    fn defaults_validate() {
        let cli = parse(&[]);
        assert!(cli.internal.is_none());
        assert_eq!(cli.run.validate(), Ok(()));
        assert_eq!(cli.run.effective(), Scenario::Broadcast);
    }

    #[test]
    fn floor_runs_its_pattern() {
        let cli = parse(&["--scenario", "floor", "--pattern", "rate", "--rate", "500"]);
        assert_eq!(cli.run.effective(), Scenario::Rate);
        let bad = parse(&["--scenario", "floor", "--pattern", "floor"]);
        assert!(bad.run.validate().is_err());
        assert!(parse(&["--scenario", "floor", "--mode", "ws"]).run.validate().is_err());
        assert_eq!(parse(&["--scenario", "floor", "--mode", "sse"]).run.validate(), Ok(()));
    }

    #[test]
    fn modes_follow_the_target() {
        assert_eq!(parse(&["--mode", "ws", "--target", "nchan"]).run.validate(), Ok(()));
        assert_eq!(parse(&["--mode", "stream"]).run.validate(), Ok(()));
        assert!(parse(&["--mode", "stream", "--target", "nchan"]).run.validate().is_err());
        for mode in ["pushlet", "bayeux"] {
            assert_eq!(parse(&["--mode", mode]).run.validate(), Ok(()), "{mode}");
            assert!(parse(&["--mode", mode, "--target", "nchan"]).run.validate().is_err(), "{mode}");
            assert!(parse(&["--scenario", "floor", "--mode", mode]).run.validate().is_err(), "{mode}");
        }
    }

    #[test]
    fn bad_numbers_are_refused() {
        assert!(parse(&["-n", "0"]).run.validate().is_err());
        assert!(parse(&["--scenario", "rate", "--rate", "0"]).run.validate().is_err());
        assert!(parse(&["--source-addrs", "0"]).run.validate().is_err());
        assert!(parse(&["--publishers", "65"]).run.validate().is_err());
    }

    #[test]
    fn several_servers_and_their_pids() {
        let cli = parse(&["--server", "127.0.0.1:1,127.0.0.1:2", "--server", "127.0.0.1:3"]);
        assert_eq!(cli.run.addrs(), vec!["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        assert_eq!(cli.run.validate(), Ok(()));
        assert_eq!(parse(&["--addr", "127.0.0.1:9"]).run.addrs(), vec!["127.0.0.1:9"]);
        let pids = parse(&["--server", "127.0.0.1:1,127.0.0.1:2", "--server-pid", "10,11", "--redis-pid", "12"]);
        assert_eq!(pids.run.server_pid, vec![10, 11]);
        assert_eq!(pids.run.redis_pid, Some(12));
        assert_eq!(pids.run.validate(), Ok(()));
        // One pid for two servers is ambiguous.
        assert!(parse(&["--server", "127.0.0.1:1,127.0.0.1:2", "--server-pid", "10"]).run.validate().is_err());
        assert!(parse(&["--scenario", "floor", "--server", "127.0.0.1:1"]).run.validate().is_err());
    }

    #[test]
    fn hidden_subcommands_parse() {
        assert!(matches!(parse(&["worker"]).internal, Some(Internal::Worker)));
        assert!(matches!(
            parse(&["floor-server", "--threads", "3"]).internal,
            Some(Internal::FloorServer { threads: 3, .. })
        ));
    }
}
