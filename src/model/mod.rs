//! The vocabulary every layer shares: a published message and its cached encodings
//! (`message`), epochs, message ids and reader cursors (`cursor`), topic names and
//! subscription selectors (`topic`), the index that finds the selectors matching a topic
//! (`selector_index`), and the nesting bound on JSON every ingest path shares (`json_depth`).
//!
//! These are plain values with no threads or channels behind them, so the store, the hub, the
//! protocols, the transports and the server can all speak about messages through this module
//! without depending on each other.

mod cursor;
mod json_depth;
mod message;
mod selector_index;
mod topic;

pub use self::cursor::{CursorError, Epoch, MessageId, Resume, Since, EPOCH_BITS, MAX_ID_LEN};
pub use self::json_depth::{check_depth, check_depth_within, TooDeep, MAX_JSON_DEPTH};
pub use self::message::{is_json_content_type, Message, Wire, MESSAGE_OVERHEAD_BYTES, PAYLOAD_COPIES};
pub use self::selector_index::SelectorIndex;
pub use self::topic::{
    is_private, private_topic, validate_internal_topic, validate_topic, Pattern, Selector, TopicError, MAX_SEGMENTS,
    MAX_SEGMENT_LEN, MAX_TOPIC_LEN, PRIVATE_PREFIX,
};
