//! Hash maps keyed by series keys and ids use aHash instead of SipHash: series keys are hashed
//! several times per point on the write path, and aHash is several times faster on short keys.
//! Its keys are random per process, so keys chosen by a client cannot be aimed at one bucket.
//!
//! Nothing iterates these maps in an order that reaches storage or replies; code that needs an
//! order sorts.

use std::collections::{HashMap, HashSet};

/// The hasher builder for [`FastMap`] and [`FastSet`].
pub type KeyHasher = ahash::RandomState;

/// A `HashMap` with [`KeyHasher`].
pub type FastMap<K, V> = HashMap<K, V, KeyHasher>;
/// A `HashSet` with [`KeyHasher`].
pub type FastSet<K> = HashSet<K, KeyHasher>;
