//! End-to-end tests of the engine through the library, with the scripted fake transport.

mod engine;
mod features;
