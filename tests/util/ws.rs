//! A minimal WebSocket client for tests: masked frames out, server frames in.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use super::WAIT;

/// A minimal client: masked frames out, server frames in.
pub struct Ws {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

#[derive(Debug, PartialEq)]
pub enum Frame {
    Text(String),
    Ping(Vec<u8>),
    Close(u16, String),
    Other(u8, Vec<u8>),
}

impl Ws {
    pub fn connect(addr: SocketAddr, path: &str) -> Ws {
        let (ws, status) = Ws::try_connect(addr, path, "");
        assert!(status.starts_with("HTTP/1.1 101"), "{status}");
        ws
    }

    /// Sends the upgrade request; returns the client and the response head.
    pub fn try_connect(addr: SocketAddr, path: &str, extra: &str) -> (Ws, String) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        );
        stream.write_all(request.as_bytes()).expect("write");
        let mut ws = Ws { stream, buf: Vec::new() };
        let end = loop {
            if let Some(pos) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break pos + 4;
            }
            assert!(ws.fill(), "closed during handshake");
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        ws.buf.drain(..end);
        (ws, head)
    }

    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    pub fn send_frame(&mut self, first_byte: u8, payload: &[u8], masked: bool) {
        let mut frame = vec![first_byte];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n < 65536 => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).expect("write frame");
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(0x81, text.as_bytes(), true);
    }

    pub fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    /// Next frame, or None when the server closed the connection.
    pub fn frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are never masked");
                let (len, start) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= start + len {
                    let payload: Vec<u8> = self.buf[start..start + len].to_vec();
                    self.buf.drain(..start + len);
                    return Some(match opcode {
                        1 => Frame::Text(String::from_utf8(payload).expect("utf8 text")),
                        9 => Frame::Ping(payload),
                        8 => {
                            let code =
                                if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 0 };
                            Frame::Close(code, String::from_utf8_lossy(payload.get(2..).unwrap_or(&[])).into_owned())
                        }
                        op => Frame::Other(op, payload),
                    });
                }
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// Next text frame as JSON, skipping pings.
    pub fn json(&mut self) -> Value {
        loop {
            match self.frame() {
                Some(Frame::Text(text)) => return serde_json::from_str(&text).expect("JSON text frame"),
                Some(Frame::Ping(_)) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    pub fn close_code(&mut self) -> u16 {
        loop {
            match self.frame() {
                Some(Frame::Close(code, _)) => return code,
                Some(Frame::Text(_) | Frame::Ping(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}
