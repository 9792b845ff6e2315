//! Linking guests against the shadowed wasi:sockets functions.

use super::*;
