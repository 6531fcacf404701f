//! # rag-acl (work in progress)
//!
//! Retrieval only returns what the caller may see, enforced at the vector-database request from
//! the caller's verified identity (issue 8). This crate so far holds the engine for Chroma's
//! HTTP API v2 (facts in `docs/rag-acl-facts.md`):
//!
//! - [`acl::Acl`]: the caller's conditions on document metadata (equality, membership of a
//!   list field, a scalar field in the caller's list, a number at most the caller's), as one
//!   Chroma `where` of positive terms only (`$ne` / `$nin` would let records without the key
//!   through) and as a local check of returned metadata with the same meaning;
//! - [`chroma`]: which operation a request path is, the caller's `where` wrapped as
//!   `{"$and": [ACL, caller]}` (so no `$or`, empty or absent filter can widen it), `include`
//!   extended with `metadatas` when the check needs them, and results (flat `get`, nested
//!   `query`) re-checked with failing entries removed from every parallel array.
//!
//! - [`qdrant`]: Qdrant REST reads (query with its prefetches, search, recommend, scroll, count,
//!   retrieve): the ACL AND-ed into every filter, the payload fields the check needs requested
//!   and stripped again, returned points re-checked (engine tests over recorded bodies: no
//!   Qdrant server is available from the package registries).
//!
//! Still to come: the proxy-wasm adapter (identity from `jwt_authn` metadata, per-role operation
//! allow-lists, ownership checks for `update` / `upsert` by id, collection name → id resolution),
//! Qdrant, metrics and the e2e test against a real Chroma server.

pub mod acl;
pub mod chroma;
pub mod qdrant;
