//! Running the `conflux` binary in tests: spawn it, watch its stderr for a
//! line, signal it, wait for its exit; every wait bounded.
#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_conflux");

/// The bound on any one wait of these tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs `conflux ARGS` to completion with `stdin` as its input.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn conflux");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = wait_output(child, WAIT);
    let _ = feeder.join();
    out
}

/// Waits for `child` (stdout and stderr piped) at most `limit`, killing it after.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let read_all = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = read_all(stdout.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err_t = read_all(stderr.map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let status = wait_status(&mut child, limit);
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// Waits for exit at most `limit`; kills the child and panics after.
pub fn wait_status(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("conflux did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `conflux` process running in the background, its stderr collected.
pub struct Running {
    pub child: Child,
    stderr: Arc<Mutex<String>>,
    /// The thread copying stderr into `stderr`; it ends at the pipe's end.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Spawns `conflux ARGS` (stdin and stdout null, stderr collected).
    pub fn spawn(args: &[&str]) -> Running {
        Running::spawn_with(Command::new(BIN).args(args).stdin(Stdio::null()).stdout(Stdio::null()))
    }

    /// Spawns `cmd`, collecting its stderr.
    pub fn spawn_with(cmd: &mut Command) -> Running {
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn conflux");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            // Raw reads, not lines: the `--progress` line has no newline.
            let mut pipe = pipe;
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Running { child, stderr, reader: Some(reader) }
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr has a line containing `needle`; returns that line.
    pub fn wait_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The line may have come just before the exit: read to the end.
                self.drain(WAIT);
                if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                    return line.to_owned();
                }
                panic!("conflux exited ({status}) before printing `{needle}`:\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "no `{needle}` on stderr within {WAIT:?}:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The port of the `listening on tcp://127.0.0.1:PORT` line.
    pub fn tcp_port(&mut self) -> u16 {
        let line = self.wait_line("on tcp://127.0.0.1:");
        let rest = &line[line.find("tcp://127.0.0.1:").unwrap() + "tcp://127.0.0.1:".len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM (through kill(1): no unsafe code in tests).
    pub fn sigterm(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -TERM");
    }

    /// Waits for the exit code, at most `limit`; then, also bounded by
    /// `limit`, for the reader to take the last of stderr (an exit can come
    /// before the reader has read the process's final lines).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let code = wait_status(&mut self.child, limit).code();
        self.drain(limit);
        code
    }

    /// After the exit: waits, at most `limit`, until the reader has taken
    /// everything the process wrote to stderr.
    fn drain(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.reader.as_ref().is_some_and(|r| !r.is_finished()) {
            assert!(Instant::now() < deadline, "stderr still open {limit:?} after conflux exited:\n{}", self.stderr());
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the stderr reader");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
