//! Host wiring.
