//! redquorum (work in progress)
#![deny(missing_docs)]
