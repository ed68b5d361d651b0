//! `frame::split_frame` over arbitrary bytes with a small maximum: `data[0] * 8` is the
//! max frame size, `data[1] + 1` the size of the reads a connection would see, the rest
//! the stream. Splitting the whole stream at once and splitting it as it arrives in
//! reads must give the same frames and the same outcome.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use paperboy_protocol::frame::{peek_correlation_id, split_frame};

#[derive(Debug, PartialEq)]
enum End {
    NeedMore(usize),
    Error,
}

fn drain(buf: &mut BytesMut, max: usize, frames: &mut Vec<Vec<u8>>) -> End {
    loop {
        let before = buf.len();
        match split_frame(buf, max) {
            Ok(Some(frame)) => {
                assert!(
                    frame.len() <= max,
                    "frame of {} past max {max}",
                    frame.len()
                );
                assert_eq!(buf.len(), before - 4 - frame.len(), "consumed != 4 + frame");
                let _ = peek_correlation_id(&frame);
                frames.push(frame.to_vec());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return End::NeedMore(before);
            }
            Err(e) => {
                let _ = e.to_string();
                return End::Error;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(data[0]) * 8;
    let chunk = usize::from(data[1]) + 1;
    let stream = &data[2..];

    let mut whole = BytesMut::from(stream);
    let mut frames_whole = Vec::new();
    let end_whole = drain(&mut whole, max, &mut frames_whole);

    let mut buf = BytesMut::new();
    let mut frames_streamed = Vec::new();
    let mut end_streamed = End::NeedMore(0);
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        end_streamed = drain(&mut buf, max, &mut frames_streamed);
        if end_streamed == End::Error {
            break;
        }
    }
    assert_eq!(frames_whole, frames_streamed);
    assert_eq!(end_whole, end_streamed);
});
