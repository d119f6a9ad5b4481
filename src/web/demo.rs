//! The simulated data behind `halley serve --demo`, one step per tick, without I/O:
//! `server/feeds.rs` runs the clock and publishes what each step produces. Rates are modest
//! (about a dozen messages a second in all) so the demo never competes with real traffic.
//!
//! | topic | event | data (JSON) | rate |
//! |---|---|---|---|
//! | `/stocks/<SYMBOL>` | `tick` | `{symbol, price, change}` | ~6/s over 10 symbols |
//! | `/monitor/<host>` | `reading`, `alarm` | `{host, temperature, voltage, led, alarm}` | each host every 1.5 s |
//! | `/chat/lobby` | `say`, `join`, `leave` | `{nick, text}` | a line every 3 s |
//! | `/orders/<merchant>` | `order` | `{order, merchant, item, qty, total}` | one every 2 s |

use crate::xorshift::XorShift;

/// How often `Demo::step` is called, in milliseconds.
pub const TICK_MS: u64 = 250;

const SYMBOLS: [(&str, f64); 10] = [
    ("ACME", 120.0),
    ("GLOBEX", 48.5),
    ("INITECH", 15.2),
    ("UMBRELLA", 230.0),
    ("HOOLI", 560.0),
    ("STARK", 310.0),
    ("WAYNE", 95.0),
    ("TYRELL", 77.7),
    ("CYBERDYNE", 12.4),
    ("WONKA", 33.3),
];
const HOSTS: [&str; 6] = ["web-1", "web-2", "db-1", "cache-1", "queue-1", "edge-1"];
/// The merchants of the order notifier; each has its own topic `/orders/<merchant>`.
pub const MERCHANTS: [&str; 3] = ["acme", "globex", "initech"];
const ITEMS: [(&str, f64); 6] = [
    ("anvil", 49.90),
    ("rocket skates", 129.00),
    ("giant magnet", 75.50),
    ("bird seed", 4.99),
    ("tornado kit", 210.00),
    ("spring boots", 59.00),
];
const BOTS: [&str; 3] = ["ada-bot", "grace-bot", "linus-bot"];
const LINES: [&str; 8] = [
    "has anyone tried the stock ticker page?",
    "the monitor says edge-1 is running hot again",
    "long-poll, SSE or WebSocket: halley.js picks for you",
    "open this page in two browsers and talk to yourself",
    "every message has an id; reload and nothing is lost",
    "a parked request holds no thread",
    "brb, coffee",
    "the dashboard shows how many of us are connected",
];

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoMsg {
    pub topic: String,
    pub event: &'static str,
    /// JSON.
    pub data: String,
}

/// The state of the simulation: prices, host readings, who is in the chat, order numbers.
#[derive(Debug)]
pub struct Demo {
    rng: XorShift,
    tick: u64,
    prices: [f64; SYMBOLS.len()],
    temperatures: [f64; HOSTS.len()],
    /// Which bots are in the chat room.
    present: [bool; BOTS.len()],
    next_order: u64,
}

impl Demo {
    pub fn new(seed: u64) -> Demo {
        Demo {
            rng: XorShift::new(seed),
            tick: 0,
            prices: SYMBOLS.map(|(_, price)| price),
            temperatures: [45.0; HOSTS.len()],
            present: [false; BOTS.len()],
            next_order: 1001,
        }
    }

    /// One tick's messages, appended to `out`.
    pub fn step(&mut self, out: &mut Vec<DemoMsg>) {
        let tick = self.tick;
        self.tick += 1;
        // Stocks: one or two ticks every tick.
        for _ in 0..1 + usize::from(self.rng.unit() < 0.5) {
            self.stock(out);
        }
        // Monitor: one host per tick, each host every HOSTS.len() ticks (about 1.5 s).
        self.monitor(tick as usize % HOSTS.len(), out);
        // Chat: a line every 3 s; orders: one every 2 s (on a fixed beat, so a page opened
        // for a moment always sees some).
        if tick % 12 == 3 {
            self.chat(out);
        }
        if tick % 8 == 1 {
            self.order(out);
        }
    }

    fn stock(&mut self, out: &mut Vec<DemoMsg>) {
        let i = self.rng.below(SYMBOLS.len());
        let old = self.prices[i];
        let step = (self.rng.unit() - 0.5) * 0.02 * old;
        let price = round2((old + step).max(0.01));
        self.prices[i] = price;
        let (symbol, _) = SYMBOLS[i];
        let data = serde_json::json!({ "symbol": symbol, "price": price, "change": round2(price - old) });
        out.push(DemoMsg { topic: format!("/stocks/{symbol}"), event: "tick", data: data.to_string() });
    }

    fn monitor(&mut self, i: usize, out: &mut Vec<DemoMsg>) {
        let drift = (self.rng.unit() - 0.5) * 3.0;
        // Pulled back towards 50 °C, with a rare spike that raises an alarm.
        let spike = if self.rng.unit() < 0.03 { 25.0 } else { 0.0 };
        let temperature =
            round1((self.temperatures[i] + drift + (50.0 - self.temperatures[i]) * 0.1 + spike).max(20.0));
        self.temperatures[i] = temperature;
        let voltage = round2(12.0 + (self.rng.unit() - 0.5) * 0.6);
        let alarm = if temperature >= 70.0 {
            Some("overheat")
        } else if !(11.75..=12.25).contains(&voltage) {
            Some("voltage")
        } else {
            None
        };
        let led = match alarm {
            Some("overheat") => "red",
            Some(_) => "amber",
            None => "green",
        };
        let host = HOSTS[i];
        let data = serde_json::json!({
            "host": host, "temperature": temperature, "voltage": voltage, "led": led, "alarm": alarm,
        });
        let event = if alarm.is_some() { "alarm" } else { "reading" };
        out.push(DemoMsg { topic: format!("/monitor/{host}"), event, data: data.to_string() });
    }

    fn chat(&mut self, out: &mut Vec<DemoMsg>) {
        let i = self.rng.below(BOTS.len());
        let nick = BOTS[i];
        let (event, text) = if !self.present[i] {
            self.present[i] = true;
            ("join", String::new())
        } else if self.rng.unit() < 0.1 {
            self.present[i] = false;
            ("leave", String::new())
        } else {
            ("say", LINES[self.rng.below(LINES.len())].to_owned())
        };
        let data = serde_json::json!({ "nick": nick, "text": text });
        out.push(DemoMsg { topic: "/chat/lobby".to_owned(), event, data: data.to_string() });
    }

    fn order(&mut self, out: &mut Vec<DemoMsg>) {
        // Round robin, so every merchant's page sees an order every few seconds.
        let merchant = MERCHANTS[(self.next_order % MERCHANTS.len() as u64) as usize];
        let (item, price) = ITEMS[self.rng.below(ITEMS.len())];
        let qty = 1 + self.rng.below(3);
        let order = self.next_order;
        self.next_order += 1;
        let data = serde_json::json!({
            "order": format!("A-{order}"), "merchant": merchant, "item": item, "qty": qty,
            "total": round2(price * qty as f64),
        });
        out.push(DemoMsg { topic: format!("/orders/{merchant}"), event: "order", data: data.to_string() });
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::validate_topic;

    #[test]
    fn a_minute_of_demo_stays_modest_and_well_formed() {
        let mut demo = Demo::new(42);
        let mut out = Vec::new();
        let ticks = 60_000 / TICK_MS;
        for _ in 0..ticks {
            demo.step(&mut out);
        }
        let per_second = out.len() as f64 / 60.0;
        assert!((5.0..20.0).contains(&per_second), "{per_second} messages/s");
        for prefix in ["/stocks/", "/monitor/", "/chat/lobby", "/orders/"] {
            assert!(out.iter().any(|m| m.topic.starts_with(prefix)), "nothing on {prefix}");
        }
        for msg in &out {
            validate_topic(&msg.topic).expect("valid topic");
            let data: serde_json::Value = serde_json::from_str(&msg.data).expect("JSON");
            assert!(data.is_object());
        }
        let chat: Vec<_> = out.iter().filter(|m| m.topic == "/chat/lobby").map(|m| m.event).collect();
        assert_eq!(chat.first(), Some(&"join"), "a bot joins before it talks");
    }
}
