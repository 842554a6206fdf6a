//! `hvcat`: netcat for hypervisor sockets, over any family URI.
//!
//! ```text
//! hvcat [--listen] [--echo] [--framed] URI
//!   URI: vsock://CID:PORT | fc-vsock:///PATH?port=N | hyperkit://:PORT/DIR | unix:///PATH
//!        (?framing=shutdown does what --framed does; ?connect_timeout=300ms bounds connects;
//!         a `-listen` suffix on the scheme does what --listen does)
//! ```
//!
//! Connecting (the default) copies stdin to the peer and the peer to stdout,
//! half-closing each direction at its Eof. `--listen` accepts one connection
//! and does the same; `--listen --echo` echoes every connection back to itself
//! until interrupted. Try, in two shells:
//!
//! ```text
//! cargo run -p conflux-hvsock --example hvcat -- --listen --echo --framed unix:///tmp/hv.sock
//! echo hello | cargo run -p conflux-hvsock --example hvcat -- --framed unix:///tmp/hv.sock
//! ```

use std::process::ExitCode;

use conflux_flow::{BoxFlow, FlowExt, FromTokio, proxy};
use conflux_hvsock::{
    Family, FamilyListener, FramingConfig, HvUri, HybridFamily, HyperkitFamily, RawFlow, Socket, UnixFamily, UriAddr,
};

const USAGE: &str = "usage: hvcat [--listen] [--echo] [--framed] URI
  URI: vsock://CID:PORT | fc-vsock:///PATH?port=N | hyperkit://:PORT/DIR | unix:///PATH
       (?framing=shutdown does what --framed does; ?connect_timeout=300ms bounds connects;
        a `-listen` suffix on the scheme does what --listen does)";

#[derive(Debug)]
struct Args {
    listen: bool,
    echo: bool,
    framed: bool,
    uri: HvUri,
}

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    /// `--help`: print the usage to stdout and exit 0.
    Help,
    Run(Args),
}

/// Parses the arguments after the program name.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let (mut listen, mut echo, mut framed, mut uri) = (false, false, false, None);
    for arg in args {
        match arg.as_str() {
            "--listen" | "-l" => listen = true,
            "--echo" => echo = true,
            "--framed" => framed = true,
            "-h" | "--help" => return Ok(Command::Help),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => uri = Some(s.parse::<HvUri>().map_err(|e| e.to_string())?),
        }
    }
    let uri = uri.ok_or("missing URI (e.g. vsock://3:5000)")?;
    Ok(Command::Run(Args { listen: listen || uri.listen, echo, framed: framed || uri.framed, uri }))
}

/// The flow to use: raw or framed, type-erased.
fn wrap<S: Socket>(flow: RawFlow<S>, framed: bool) -> BoxFlow {
    if framed { flow.into_framed(FramingConfig::new()).boxed() } else { flow.boxed() }
}

/// Copies stdin/stdout to and from `flow` until both directions end.
async fn cat(mut flow: BoxFlow) -> Result<(), String> {
    let mut stdio = FromTokio::new(tokio::io::join(tokio::io::stdin(), tokio::io::stdout()));
    let stats = proxy(&mut stdio, &mut flow).await.map_err(|e| e.to_string())?;
    let _ = flow.close().await;
    eprintln!("hvcat: sent {} bytes, received {} bytes", stats.a_to_b.bytes, stats.b_to_a.bytes);
    Ok(())
}

/// Echoes what `flow` sends back to it, then closes.
async fn echo(mut flow: BoxFlow) {
    while let Ok(Some(chunk)) = flow.read().await {
        if flow.write(chunk).await.is_err() {
            break;
        }
    }
    let _ = flow.close().await;
}

async fn run<F: Family>(family: F, addr: F::Addr, args: &Args) -> Result<(), String> {
    let framed = args.framed;
    if args.listen {
        let listener = family.listen(&addr, 16).map_err(|e| format!("listen on {addr}: {e}"))?;
        eprintln!("hvcat: listening on {}", listener.local_addr().map_err(|e| e.to_string())?);
        loop {
            let (sock, peer) = listener.accept().await.map_err(|e| format!("accept: {e}"))?;
            eprintln!("hvcat: connection from {peer}");
            let flow = wrap(RawFlow::new(sock), framed);
            if args.echo {
                tokio::spawn(echo(flow));
            } else {
                return cat(flow).await;
            }
        }
    } else {
        let sock =
            family.connect(&addr, args.uri.connect_timeout).await.map_err(|e| format!("connect to {addr}: {e}"))?;
        cat(wrap(RawFlow::new(sock), framed)).await
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hvcat: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match args.uri.addr.clone() {
        #[cfg(target_os = "linux")]
        UriAddr::Vsock(a) => run(conflux_hvsock::VsockFamily, a, &args).await,
        UriAddr::FcVsock(a) => run(HybridFamily, a, &args).await,
        UriAddr::Hyperkit(a) => run(HyperkitFamily, a, &args).await,
        UriAddr::Unix(p) => run(UnixFamily, conflux_hvsock::UnixAddr::new(p), &args).await,
        other => Err(format!("{other:?}: not available on this platform")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hvcat: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn help_is_not_an_error() {
        for flag in ["--help", "-h"] {
            assert!(matches!(parse(&[flag]), Ok(Command::Help)), "{flag}");
            assert!(matches!(parse(&["--framed", flag, "unix:///x"]), Ok(Command::Help)), "{flag} among others");
        }
        assert!(USAGE.starts_with("usage: hvcat"));
    }

    #[test]
    fn options_and_errors() {
        let Ok(Command::Run(a)) = parse(&["--echo", "unix-listen:///tmp/x.sock?framing=shutdown"]) else { panic!() };
        assert!(a.listen && a.echo && a.framed);
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown option"));
        assert!(parse(&[]).unwrap_err().contains("missing URI"));
    }
}
