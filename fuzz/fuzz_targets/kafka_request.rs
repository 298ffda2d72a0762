//! Kafka request framing and decoding: arbitrary bytes as they would arrive on a socket.
//! The frame reader must refuse bad lengths before allocating; the decoder must return an
//! error (never panic) for any header/body it cannot parse.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_frontend_kafka::codec::{decode_request, peek_prefix};
use sluice_frontend_kafka::framing::{read_body, read_length};
use sluice_frontend_kafka::versions;

/// Small, so the fuzzer explores "too large" as well as real frames.
const MAX_FRAME: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut input = data;
        while let Ok(Some(size)) = read_length(&mut input, MAX_FRAME).await {
            assert!(size <= MAX_FRAME);
            let Ok(frame) = read_body(&mut input, size).await else {
                return;
            };
            let Some(prefix) = peek_prefix(&frame) else {
                continue;
            };
            let Ok(api) = kafka_protocol::messages::ApiKey::try_from(prefix.api_key) else {
                continue;
            };
            if !versions::is_supported(api, prefix.api_version) {
                continue;
            }
            let _ = decode_request(Bytes::copy_from_slice(&frame), api, prefix.api_version);
        }
    });
});
