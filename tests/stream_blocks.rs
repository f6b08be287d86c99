//! A long line passed on in chunks (`jsonrpc::LineReader::stream_line`)
//! is read into the same few blocks again, not a fresh block per read.
//!
//! Each chunk shares the block it was read into until the client has it.
//! Here the reader's user holds the last chunks it got, as chunks on their
//! way to a socket are held, and this binary's allocator counts the
//! allocations of a block's size made on the test's thread.
//! A fresh block per read is what made a pass-through of megabytes spend
//! a good part of its time in page faults.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use mcp_sidecar::jsonrpc::{LineReader, Piece};
use tokio::io::{AsyncRead, ReadBuf};

/// Allocations at least this large count as a block.
const BLOCK: usize = 512 * 1024;

struct Counting;

thread_local! {
    static BLOCKS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= BLOCK {
            // `try_with`: not during the thread's own teardown.
            let _ = BLOCKS.try_with(|n| n.set(n.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= BLOCK {
            let _ = BLOCKS.try_with(|n| n.set(n.get() + 1));
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn blocks() -> usize {
    BLOCKS.with(Cell::get)
}

/// Hands out `data` at most `per_read` bytes at a time, as a pipe does.
struct Pipe {
    data: Vec<u8>,
    at: usize,
    per_read: usize,
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (self.data.len() - self.at)
            .min(self.per_read)
            .min(buf.remaining());
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Streams one line of `mib` MiB plus a short line after it, holding the
/// last `held` chunks (as a client that many reads behind would). The
/// pieces' bytes and the block count.
async fn stream(mib: usize, held: usize) -> (Vec<u8>, usize) {
    let mut data = vec![b'x'; mib << 20];
    data.extend_from_slice(b"\n{\"after\":1}\n");
    let pipe = Pipe {
        data,
        at: 0,
        per_read: 1 << 20,
    };
    let mut reader = LineReader::new(pipe, 64 << 20).offering_long_lines_at(128 * 1024);
    // Made before counting: only the reader's blocks count.
    let mut out = Vec::with_capacity((mib << 20) + 1);
    let before = blocks();
    assert_eq!(reader.next_piece().await.unwrap(), Some(Piece::Long));
    out.extend_from_slice(&reader.stream_line());
    let mut in_flight: VecDeque<Bytes> = VecDeque::new();
    loop {
        match reader.next_piece().await.unwrap() {
            Some(Piece::Chunk(chunk)) => {
                out.extend_from_slice(&chunk);
                // The oldest chunk is written and dropped; the newer ones
                // are still on their way.
                in_flight.push_back(chunk);
                if in_flight.len() > held {
                    in_flight.pop_front();
                }
            }
            Some(Piece::LineEnd(last)) => {
                out.extend_from_slice(&last);
                break;
            }
            other => panic!("unexpected piece {other:?}"),
        }
    }
    drop(in_flight);
    let used = blocks() - before;
    let next = reader.next_line().await.unwrap();
    assert_eq!(next.as_deref(), Some(&b"{\"after\":1}"[..]));
    (out, used)
}

#[tokio::test]
async fn a_long_line_is_read_into_the_same_few_blocks() {
    let (out, used) = stream(16, 1).await;
    assert_eq!(out.len(), 16 << 20);
    assert!(out.iter().all(|b| *b == b'x'));
    // The block of the chunk in flight and the one read into, in turn
    // (and at most one more while the head's block is still shared); a
    // fresh block per read made it 16 or more.
    assert!(used <= 3, "{used} blocks allocated for 16 reads");
}

#[tokio::test]
async fn the_count_does_not_grow_with_the_line() {
    for held in [1, 3] {
        let (_, short) = stream(4, held).await;
        let (_, long) = stream(32, held).await;
        assert_eq!(
            short, long,
            "{held} held: blocks for 4 MiB: {short}, for 32 MiB: {long}"
        );
    }
}

#[tokio::test]
async fn a_client_further_behind_than_the_spares_still_gets_the_whole_line() {
    // More chunks in flight than blocks kept: each read takes a fresh
    // block, as before the spares, and the line still arrives whole.
    let (out, used) = stream(16, 8).await;
    assert_eq!(out.len(), 16 << 20);
    assert!(used >= 8, "{used} blocks with 8 chunks held");
}
