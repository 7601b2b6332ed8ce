//! xDS translation, ADS protocol state machine and server.
