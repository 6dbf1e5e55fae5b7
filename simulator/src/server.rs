//! STUB: HTTP front (being written).
