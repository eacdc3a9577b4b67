//! redquorum: Redlock over a quorum of Redis masters, plus a libmemcached-compatible ketama
//! ring ([`HashRing`]) for placing cache keys across masters.
#![deny(missing_docs)]

mod ring;

pub use ring::{HashRing, RingNode};
