//! Upstream mirage-flow's ten test cases, ported to the function-backed flow (`FnFlow`).
//!
//! Upstream runs cases 1-8 once with OCaml
//! strings and once with Cstructs. Here "string" inputs are `&'static str`/`String`
//! chunks and "buffer" inputs are `Bytes`; outputs are `OutputBuffer`s either way.

use bytes::Bytes;
use conflux_flow::{FlowExt, FnFlow, OutputBuffer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufWriter};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn input_then_closed(mut flow: FnFlow) {
    let chunk = flow.read().await.unwrap().expect("one chunk");
    assert_eq!(chunk, "xxxxxxxxxx", "all 10 bytes in one chunk");
    assert!(flow.read().await.unwrap().is_none(), "then Eof");
    let err = flow.write("hihi").await.unwrap_err();
    assert!(err.is_closed(), "no output: writes give Closed, got {err}");
}

async fn output_into_one_buffer(out: OutputBuffer) {
    let mut flow = FnFlow::new().with_output_buffers([out.clone()]);
    flow.write("hell").await.unwrap();
    flow.write("o! ").await.unwrap();
    let err = flow.write("world").await.unwrap_err();
    assert!(err.is_closed(), "a full buffer gives Closed, got {err}");
    assert_eq!(out.contents(), b"hello! wor", "the prefix of the failed write landed");
    assert!(flow.read().await.unwrap().is_none(), "no input: Eof");
}

async fn input_list(mut flow: FnFlow) {
    for want in ["123", "45", "6789", "0"] {
        assert_eq!(flow.read().await.unwrap().expect("a chunk"), want);
    }
    assert!(flow.read().await.unwrap().is_none());
    assert!(flow.read().await.unwrap().is_none(), "Eof is sticky");
    assert!(flow.write("x").await.unwrap_err().is_closed());
}

async fn output_list(bufs: [OutputBuffer; 4]) {
    let mut flow = FnFlow::new().with_output_buffers(bufs.clone());
    flow.write("hell").await.unwrap();
    flow.write("o! ").await.unwrap();
    let err = flow.write("world").await.unwrap_err();
    assert!(err.is_closed());
    let filled: Vec<Vec<u8>> = bufs.iter().map(OutputBuffer::contents).filter(|b| !b.is_empty()).collect();
    assert_eq!(filled, [b"hel".to_vec(), b"lo".to_vec(), b"! w".to_vec()]);
    assert!(flow.read().await.unwrap().is_none());
}

#[test]
fn case_01_string_input() {
    rt().block_on(input_then_closed(FnFlow::new().with_input_chunks(["xxxxxxxxxx"])));
}

#[test]
fn case_02_string_output() {
    rt().block_on(output_into_one_buffer(OutputBuffer::new("..........")));
}

#[test]
fn case_03_string_input_list() {
    rt().block_on(input_list(FnFlow::new().with_input_chunks(["", "123", "45", "6789", "0"])));
}

#[test]
fn case_04_string_output_list() {
    let bufs = [OutputBuffer::new("xxx"), OutputBuffer::new(""), OutputBuffer::new("xx"), OutputBuffer::new("xxx")];
    rt().block_on(output_list(bufs));
}

#[test]
fn case_05_buffer_input() {
    let input = vec![Bytes::from_static(b"xxxxxxxxxx")];
    rt().block_on(input_then_closed(FnFlow::new().with_input_chunks(input)));
}

#[test]
fn case_06_buffer_output() {
    rt().block_on(output_into_one_buffer(OutputBuffer::zeroed(10)));
}

#[test]
fn case_07_buffer_input_list() {
    let input: Vec<Bytes> =
        ["123", "45", "", "6789", "0"].into_iter().map(|s| Bytes::from_static(s.as_bytes())).collect();
    rt().block_on(input_list(FnFlow::new().with_input_chunks(input)));
}

#[test]
fn case_08_buffer_output_list() {
    let bufs = [OutputBuffer::zeroed(0), OutputBuffer::zeroed(3), OutputBuffer::zeroed(2), OutputBuffer::zeroed(3)];
    rt().block_on(output_list(bufs));
}

#[test]
fn case_09_line_reader_over_the_tokio_adapter() {
    rt().block_on(async {
        let flow = FnFlow::new().with_input_chunks(["1", "234", "56", "78\n90"]);
        let mut io = flow.into_tokio();
        let mut line = String::new();
        io.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim_end_matches('\n'), "12345678", "the line is reassembled across chunks");
    });
}

#[test]
fn case_10_buffered_writer_over_the_tokio_adapter() {
    rt().block_on(async {
        let bufs = [OutputBuffer::new("xxxx"), OutputBuffer::new("xxxx"), OutputBuffer::new("xxxxxx")];
        let flow = FnFlow::new().with_output_buffers(bufs.clone());
        let mut w = BufWriter::new(flow.into_tokio());
        w.write_all(b"Hello world!\n").await.unwrap();
        w.flush().await.unwrap();
        let got: Vec<Vec<u8>> = bufs.iter().map(OutputBuffer::contents).collect();
        assert_eq!(got, [b"Hell".to_vec(), b"o wo".to_vec(), b"rld!\nx".to_vec()]);
    });
}

/// A function-backed flow's close hook runs once, however often it is closed.
#[tokio::test]
async fn fn_flow_runs_its_close_hook_once() {
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = closed.clone();
    let mut f = FnFlow::new().with_close(move || {
        c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    });
    f.close().await.unwrap();
    let _ = f.close().await;
    assert_eq!(closed.load(std::sync::atomic::Ordering::SeqCst), 1);
}
