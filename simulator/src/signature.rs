//! STUB: server-side signature verification (being written).
