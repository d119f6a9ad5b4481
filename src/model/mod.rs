//! The vocabulary every layer shares: a published message and its cached encodings
//! (`message`), epochs, message ids and reader cursors (`cursor`), topic names and
//! subscription selectors (`topic`), and the index that finds the selectors matching a topic
//! (`selector_index`).
//!
//! These are plain values with no threads or channels behind them, so the store, the hub, the
//! protocols, the transports and the server can all speak about messages through this module
//! without depending on each other.

mod cursor;
mod message;
mod selector_index;
mod topic;

pub use self::cursor::{CursorError, Epoch, MessageId, Resume, Since, EPOCH_BITS, MAX_ID_LEN};
pub use self::message::{Message, Wire, MESSAGE_OVERHEAD_BYTES, PAYLOAD_COPIES};
pub use self::selector_index::SelectorIndex;
pub use self::topic::{validate_topic, Pattern, Selector, TopicError, MAX_SEGMENTS, MAX_SEGMENT_LEN, MAX_TOPIC_LEN};
