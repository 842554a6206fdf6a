//! `conflux`: relay, cat and serve between endpoint URIs of every scheme
//! (tcp, tls, unix, vsock, fc-vsock, hyperkit, netstack, stdio; `?framing=shutdown` on
//! any stream), and an in-process demo that needs no root and no network.
//!
//! Exit codes: 0 success; 1 a runtime failure (refused, reset, an I/O
//! error); 2 usage or bad input (a bad URI, an unknown option). Errors are
//! one line on stderr, prefixed `conflux:`, naming what was wrong.
#![forbid(unsafe_code)]

mod cat;
mod demo;
mod endpoints;
mod error;
mod meter;
mod progress;
mod relay;
mod serve9p;
mod signals;
mod usernet;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use conflux_uri::Uri;

use crate::endpoints::Endpoints;
use crate::error::CliError;

const EXAMPLES: &str = "\
Examples:
  conflux demo                                   # what conflux does, in-process, in a few seconds
  conflux relay tcp://:8080 unix:///run/app.sock # forward a local TCP port to a Unix socket
  conflux relay tcp-listen://127.0.0.1:2222 'fc-vsock:///srv/vm1/v.sock?port=22&framing=shutdown'
  echo hello | conflux cat tcp://127.0.0.1:8080  # netcat: stdin to the peer, the peer to stdout
  conflux cat 'unix-listen:///tmp/s.sock?framing=shutdown'
  conflux serve-9p tcp://:5640 ./shared --read-only
  sudo conflux usernet --netns /run/netns/box --configure  # network access for a namespace (slirp4netns's job)
  conflux usernet --listen unix:///run/vm0.sock  # ... or for a VM: QEMU -netdev stream connects here

Endpoints are URIs: tcp://HOST:PORT, tls://HOST:PORT, unix:///PATH, vsock://CID:PORT,
fc-vsock:///PATH?port=N, hyperkit://:PORT/DIR, netstack://TAP/ADDR/PREFIX:PORT (a userspace
stack on a TAP or TUN device; connect with ?dst=HOST:PORT), stdio:; add ?framing=shutdown for the
hvsock shutdown framing, ?connect_timeout=5s to bound a connect. A `-listen` suffix
(tcp-listen://) makes an endpoint listen; listening on a port without a host means 127.0.0.1.";

const RELAY_EXAMPLES: &str = "\
Examples:
  conflux relay tcp://:8080 unix:///run/app.sock
  conflux relay --once tcp://127.0.0.1:0 'unix:///tmp/echo.sock?framing=shutdown'
  conflux relay --max-flows 64 --idle-timeout 10m tcp://0.0.0.0:2222 vsock://3:22

Each flow's Eof is passed on as a half-close; a reset on one side aborts the other
(an RST on TCP; a framed peer reads a reset). One log line per flow when it ends:
id, from, to, bytes each way (up = FROM to TO), duration, end (eof, reset, timeout,
error, aborted).";

const CAT_EXAMPLES: &str = "\
Examples:
  echo hello | conflux cat tcp://127.0.0.1:8080
  conflux cat 'fc-vsock:///srv/vm1/v.sock?port=52&framing=shutdown' < request.bin > reply.bin
  conflux cat tcp-listen://:9000 > received.bin     # accept one flow, then exit

stdin's end half-closes the flow (shutdown write); conflux exits once both directions ended.";

const DEMO_EXAMPLES: &str = "\
Examples:
  conflux demo
  conflux demo --json | jq '.steps[] | {name, ok}'

Everything runs in this process on in-memory links: no root, no setup, no network.";

const SERVE_9P_EXAMPLES: &str = "\
Examples:
  conflux serve-9p tcp://:5640 ./shared
  conflux serve-9p 'unix:///tmp/9p.sock' /srv/export --read-only
  sudo mount -t 9p -o trans=tcp,port=5640,version=9p2000.u 127.0.0.1 /mnt

9P2000 and 9P2000.u; paths never escape DIR (no `..`, no symlink out).";

const USERNET_EXAMPLES: &str = "\
Examples:
  sudo ip netns add box && sudo conflux usernet --netns /run/netns/box --configure
  sudo conflux usernet --netns $PID --configure --mtu 65520     # PID: e.g. a shell started by `unshare --net`
  sudo conflux usernet --netns $PID --configure --host-loopback --allow 127.0.0.0/8 -p 8080:80
  conflux usernet --listen unix:///run/vm0.sock -p 2222:22  # then: qemu ... -netdev stream,id=n0,server=off,addr.type=unix,addr.path=/run/vm0.sock
  conflux usernet --listen 'fc-vsock:///srv/vm1/v.sock?port=1024&framing=shutdown'
  conflux usernet --connect unix:///tmp/passt_1.socket     # a frame server (passt, gvisor-tap-vsock)

Exactly one guest: --netns (a TAP device in a namespace), --listen URI (a VM's hypervisor connects;
one guest at a time, the next accepted when one ends) or --connect URI (connect again after an end,
100 ms doubling to 5 s). A VM's frames travel in QEMU's stream framing (a 4-byte big-endian length
before each Ethernet frame) over any endpoint URI; a VM gets its address by DHCP.
The guest is 10.0.2.100/24, the gateway 10.0.2.2 (the host's loopback with --host-loopback), the
DNS forwarder 10.0.2.3 (to --dns-upstream or the host's first nameserver). --allow matches the
host-side destination, after the gateway's mapping.
SIGUSR1 prints the counters on stderr (and so does the exit); SIGTERM refuses new connections,
lets open flows finish for --grace, then aborts them and removes the device (a second signal: at
once); with --netns PID, conflux exits when that process does (at once).";

/// Relay, cat and serve between endpoint URIs of every scheme.
#[derive(Debug, Parser)]
#[command(name = "conflux", version, about, after_help = EXAMPLES)]
struct Cli {
    /// More logging on stderr: -v debug, -vv trace (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Threads that run the flows: 1 runs everything on one thread, N > 1 spreads
    /// busy flows over N worker threads (default: 1; serve-9p: one per CPU).
    #[arg(long, value_name = "N", global = true, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The runtime's threads: `--threads`, or the subcommand's default.
    fn threads(&self) -> Option<usize> {
        self.threads.map(usize::from).or_else(|| self.command.default_threads())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show what conflux does, in-process: userspace stacks, the registry, the framing and its fault model.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo {
        /// The same facts as JSON on stdout, every step with a success flag.
        #[arg(long)]
        json: bool,
    },
    /// Accept flows on FROM, connect each to TO, proxy both ways.
    #[command(after_help = RELAY_EXAMPLES)]
    Relay {
        /// Where to listen (a URI; it listens whether or not the scheme says -listen).
        from: String,
        /// Where to connect each accepted flow (a URI).
        to: String,
        /// At most N flows at once; more wait to be accepted.
        #[arg(long, value_name = "N")]
        max_flows: Option<usize>,
        /// Abort a flow that moved no byte for this long (500ms, 30s, 10m, 1h).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        idle_timeout: Option<Duration>,
        /// Bound each connect to TO (unless TO has ?connect_timeout=).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        connect_timeout: Option<Duration>,
        /// Relay one flow, then exit: 0 when it ended with eof, 1 otherwise.
        #[arg(long)]
        once: bool,
        /// A live line on stderr (bytes/s each way, flows open): only when stderr
        /// is a terminal, unless `--progress=always`.
        #[arg(long, value_enum, value_name = "WHEN", num_args = 0..=1, default_missing_value = "auto")]
        progress: Option<When>,
        /// After SIGINT/SIGTERM: stop accepting, let open flows finish this long, then abort them.
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "5s")]
        grace: Duration,
    },
    /// One flow between stdin/stdout and URI (connect, or accept one with a -listen URI).
    #[command(after_help = CAT_EXAMPLES)]
    Cat {
        /// The endpoint.
        uri: String,
        /// Bound the connect (unless URI has ?connect_timeout=).
        #[arg(long, value_name = "D", value_parser = parse_duration)]
        connect_timeout: Option<Duration>,
    },
    /// Serve DIR over 9P2000(.u) to every flow accepted on LISTEN_URI.
    #[command(name = "serve-9p", after_help = SERVE_9P_EXAMPLES)]
    Serve9p {
        /// Where to listen (a URI).
        listen_uri: String,
        /// The directory to serve; nothing outside it is reachable.
        dir: PathBuf,
        /// Refuse every change (create, write, remove, wstat).
        #[arg(long)]
        read_only: bool,
    },
    /// Network access for a namespace (a TAP device in it) or a VM (its frames over any URI), through a userspace stack here.
    #[command(
        after_help = USERNET_EXAMPLES,
        override_usage = "conflux usernet (--netns PID|PATH | --listen URI | --connect URI) [OPTIONS]"
    )]
    Usernet {
        /// The guest is a namespace: a PID (served until that process exits) or a path (/run/netns/NAME).
        #[arg(long, value_name = "PID|PATH")]
        netns: Option<String>,
        /// The guest is a VM whose hypervisor connects here: listen on URI, serve one guest at a
        /// time (QEMU stream frames: QEMU `-netdev stream`, a VMM over vsock or fc-vsock).
        #[arg(long, value_name = "URI")]
        listen: Option<String>,
        /// The guest is a VM's frames from a server at URI (e.g. passt's socket): connect, and
        /// connect again after an end.
        #[arg(long, value_name = "URI")]
        connect: Option<String>,
        /// Configure the namespace's device: the guest addresses (IPv4, and IPv6 unless off), the default routes via the gateway, the MTU, up.
        #[arg(long)]
        configure: bool,
        /// The link MTU (65520 for speed).
        #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1280..=65520))]
        mtu: u32,
        /// Inbound port forwards (`-p`, docker's syntax).
        #[arg(
            short = 'p',
            long = "publish",
            value_name = "FORWARD",
            help = "Forward a host port to the guest: [tcp:|udp:][HOST_IP:]HOST_PORT:GUEST_PORT (HOST_IP 127.0.0.1)"
        )]
        publish: Vec<conflux_usernet::PortForward>,
        /// Let the gateway address reach the host's loopback (127.0.0.1, ::1).
        #[arg(long)]
        host_loopback: bool,
        /// Allow only these host-side destinations (repeatable; matched after the gateway's mapping).
        #[arg(long, value_name = "CIDR")]
        allow: Vec<conflux_usernet::Cidr>,
        /// Where DNS queries to 10.0.2.3 go (default: the host's first nameserver).
        #[arg(long, value_name = "ADDR:PORT")]
        dns_upstream: Option<std::net::SocketAddr>,
        /// The TAP interface's name inside the namespace (default tap0; --netns only).
        #[arg(long, value_name = "NAME")]
        interface: Option<String>,
        /// After SIGINT/SIGTERM: refuse new connections, let open flows finish this long, then abort them.
        #[arg(long, value_name = "D", value_parser = parse_duration, default_value = "5s")]
        grace: Duration,
        /// TCP keepalive towards the guest: a silent guest's flows end, the host side reset (default 30s,30s,3).
        #[arg(long, value_name = "AFTER,INTERVAL,PROBES|off", value_parser = parse_keepalive)]
        keepalive_guest: Option<KeepaliveArg>,
        /// TCP keepalive on the host connections: a silent host peer's flows end, the guest reset (default 60s,15s,4).
        #[arg(long, value_name = "AFTER,INTERVAL,PROBES|off", value_parser = parse_keepalive)]
        keepalive_host: Option<KeepaliveArg>,
    },
}

impl Command {
    /// The runtime's threads without `--threads` (`None`: one per CPU).
    ///
    /// One thread for all but serve-9p: a flow's work (a relay's copy, a
    /// usernet forward) is one task, and on a multi-thread runtime its
    /// wake-ups cross threads, each a futex or an IPI. Measured on a 2-vCPU
    /// VM (docs/netstack-profile.md, "The CLI's runtime"): one thread relays
    /// one-at-a-time connections 1.4-1.7x as fast (`relay-churn`) and
    /// forwards a namespace's short connections 1.2-1.4x as fast
    /// (`usernet-crr`), one bulk flow as fast, four bulk flows through a
    /// relay 0.7x as fast (`--threads 2` for those). serve-9p does its file
    /// I/O inline in the request tasks, which other threads keep serving
    /// around.
    fn default_threads(&self) -> Option<usize> {
        match self {
            Command::Serve9p { .. } => None,
            Command::Demo { .. } | Command::Relay { .. } | Command::Cat { .. } | Command::Usernet { .. } => Some(1),
        }
    }
}

/// The runtime: `threads` 1 runs everything on this thread (tokio's
/// current_thread runtime), more on that many workers, `None` on one per
/// CPU.
fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

/// A keepalive option's value: `off` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeepaliveArg(Option<conflux_tcp::Keepalive>);

/// `AFTER,INTERVAL,PROBES` (durations as `--grace`'s: `30s,30s,3`) or `off`.
fn parse_keepalive(s: &str) -> Result<KeepaliveArg, String> {
    if s == "off" {
        return Ok(KeepaliveArg(None));
    }
    let parts: Vec<&str> = s.split(',').collect();
    let [after, interval, probes] = parts[..] else {
        return Err(format!("`{s}` is not AFTER,INTERVAL,PROBES (e.g. 30s,30s,3) or off"));
    };
    let probes = match probes.parse::<u32>() {
        Ok(n) if n > 0 => n,
        _ => return Err(format!("`{s}`: PROBES `{probes}` is not a whole number from 1")),
    };
    let ka = conflux_tcp::Keepalive::new(parse_duration(after)?, parse_duration(interval)?, probes);
    if ka.interval.is_zero() {
        return Err(format!("`{s}`: the INTERVAL is zero"));
    }
    Ok(KeepaliveArg(Some(ka)))
}

/// When to show `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum When {
    /// Only when stderr is a terminal.
    Auto,
    /// Always.
    Always,
}

/// `500ms`, `5s`, `2m`, `1h`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let n: u64 = n.parse().map_err(|_| format!("`{s}` is not a duration (500ms, 5s, 2m, 1h)"))?;
    let secs = |k: u64| n.checked_mul(k).map(Duration::from_secs).ok_or_else(|| format!("`{s}` is too long"));
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h)")),
    }
}

/// Parses an endpoint argument; a bad one is a usage error naming the part.
fn parse_uri(what: &str, text: &str) -> Result<Uri, CliError> {
    text.parse().map_err(|e| CliError::usage(format!("bad {what}URI `{text}`: {e}")))
}

/// Logs to stderr: by default one line per relayed flow (info from this
/// binary, warnings from the libraries); `-v` debug, `-vv` trace; `RUST_LOG`
/// (`target=level,...`) replaces all of that.
fn init_logging(verbose: u8) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse::<Targets>().ok());
    let filter = from_env.unwrap_or_else(|| {
        let (ours, theirs) = match verbose {
            0 => (LevelFilter::INFO, LevelFilter::WARN),
            1 => (LevelFilter::DEBUG, LevelFilter::DEBUG),
            _ => (LevelFilter::TRACE, LevelFilter::TRACE),
        };
        Targets::new().with_default(theirs).with_target("conflux", ours)
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(verbose > 0)
        .with_ansi(std::io::stderr().is_terminal());
    tracing_subscriber::registry().with(filter).with(fmt).init();
}

async fn run(command: Command) -> Result<(), CliError> {
    match command {
        Command::Demo { json } => demo::run(json).await,
        Command::Relay { from, to, max_flows, idle_timeout, connect_timeout, once, progress, grace } => {
            let (from, to) = (parse_uri("FROM ", &from)?, parse_uri("TO ", &to)?);
            let progress = match progress {
                None => false,
                Some(When::Always) => true,
                Some(When::Auto) => std::io::stderr().is_terminal(),
            };
            let opts = relay::RelayOptions { max_flows, idle_timeout, connect_timeout, once, progress, grace };
            relay::run(Endpoints::new(), from, to, opts).await
        }
        Command::Cat { uri, connect_timeout } => {
            let uri = parse_uri("", &uri)?;
            cat::run(Endpoints::new(), uri, connect_timeout).await
        }
        Command::Serve9p { listen_uri, dir, read_only } => {
            let uri = parse_uri("LISTEN-", &listen_uri)?;
            serve9p::run(Endpoints::new(), uri, dir, read_only).await
        }
        Command::Usernet {
            netns,
            listen,
            connect,
            configure,
            mtu,
            publish,
            host_loopback,
            allow,
            dns_upstream,
            interface,
            grace,
            keepalive_guest,
            keepalive_host,
        } => {
            let args = usernet::GuestArgs { netns, listen, connect, configure, interface };
            let guest = usernet::Guest::from_args(&args)?;
            let mut config = conflux_usernet::UsernetConfig::new()
                .configure(configure)
                .mtu(mtu as usize)
                .host_loopback(host_loopback)
                .interface(args.interface.unwrap_or_else(|| "tap0".to_owned()));
            config = allow.into_iter().fold(config, conflux_usernet::UsernetConfig::allow);
            config = publish.into_iter().fold(config, conflux_usernet::UsernetConfig::forward);
            if let Some(up) = dns_upstream {
                config = config.dns_upstream(up);
            }
            if let Some(KeepaliveArg(ka)) = keepalive_guest {
                config = config.guest_keepalive(ka);
            }
            if let Some(KeepaliveArg(ka)) = keepalive_host {
                config = config.host_keepalive(ka);
            }
            usernet::run(Endpoints::new(), guest, config, grace).await
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                // Help and version go to stdout, exit 0.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("conflux: {first} (see `conflux --help`)");
            return ExitCode::from(2);
        }
    };
    init_logging(cli.verbose);
    let runtime = match runtime(cli.threads()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conflux: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // A read of stdin may still be blocked in its thread: do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conflux: {e}");
            e.code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn one_thread_but_for_serve_9p_unless_threads_says_otherwise() {
        let threads = |args: &[&str]| Cli::try_parse_from(args).unwrap().threads();
        assert_eq!(threads(&["conflux", "demo"]), Some(1));
        assert_eq!(threads(&["conflux", "relay", "tcp://:1", "tcp://127.0.0.1:2"]), Some(1));
        assert_eq!(threads(&["conflux", "cat", "tcp://127.0.0.1:2"]), Some(1));
        assert_eq!(threads(&["conflux", "usernet", "--netns", "1"]), Some(1));
        assert_eq!(threads(&["conflux", "serve-9p", "tcp://:5640", "."]), None, "one per CPU");
        assert_eq!(threads(&["conflux", "--threads", "4", "relay", "tcp://:1", "tcp://127.0.0.1:2"]), Some(4));
        assert_eq!(threads(&["conflux", "serve-9p", "--threads", "1", "tcp://:5640", "."]), Some(1));
        for bad in ["0", "1025", "many"] {
            assert!(Cli::try_parse_from(["conflux", "--threads", bad, "demo"]).is_err(), "--threads {bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn usernet_takes_a_vm_guest_and_the_same_options() {
        let cli = Cli::try_parse_from([
            "conflux",
            "usernet",
            "--listen",
            "unix:///run/vm0.sock",
            "-p",
            "2222:22",
            "--allow",
            "127.0.0.0/8",
            "--host-loopback",
            "--dns-upstream",
            "127.0.0.1:5353",
            "--mtu",
            "65520",
        ])
        .unwrap();
        let Command::Usernet { netns, listen, connect, publish, allow, host_loopback, mtu, interface, .. } =
            cli.command
        else {
            panic!("not usernet: {:?}", cli.command)
        };
        assert_eq!((netns, listen.as_deref(), connect), (None, Some("unix:///run/vm0.sock"), None));
        assert_eq!((publish.len(), allow.len(), host_loopback, mtu, interface), (1, 1, true, 65520, None));
        let e = Cli::try_parse_from(["conflux", "usernet", "--connect", "unix:///x", "--mtu", "9"]).unwrap_err();
        assert!(e.to_string().contains("--mtu"), "{e}");
    }

    #[test]
    fn usernet_keepalives_parse_or_name_the_wrong_part() {
        let cli = Cli::try_parse_from([
            "conflux",
            "usernet",
            "--connect",
            "unix:///x",
            "--keepalive-guest",
            "10s,5s,2",
            "--keepalive-host",
            "off",
        ])
        .unwrap();
        let Command::Usernet { keepalive_guest, keepalive_host, .. } = cli.command else { panic!("not usernet") };
        let ka = conflux_tcp::Keepalive::new(Duration::from_secs(10), Duration::from_secs(5), 2);
        assert_eq!((keepalive_guest, keepalive_host), (Some(KeepaliveArg(Some(ka))), Some(KeepaliveArg(None))));
        for (bad, part) in [
            ("10s,5s", "AFTER,INTERVAL,PROBES"),
            ("10s,5s,0", "PROBES `0`"),
            ("10s,0s,3", "INTERVAL"),
            ("x,5s,3", "`x`"),
        ] {
            let e = Cli::try_parse_from(["conflux", "usernet", "--connect", "unix:///x", "--keepalive-guest", bad])
                .unwrap_err();
            assert!(e.to_string().contains(part), "{bad}: {e}");
        }
    }
}
