//! # rag-acl
//!
//! Retrieval only returns what the caller may see, enforced at the vector-database request from
//! the caller's verified identity (`jwt_authn` claims), whatever filter the application sent.
//! Facts about the APIs, checked against a real Chroma 1.5.9, are in `docs/rag-acl-facts.md`;
//! the operator's guide is `docs/rag-acl.md`.
//!
//! - [`policy`]: claims → ACL attributes, rules on metadata fields (equals, in, any-of, at
//!   most), roles → operations, the collections the policy covers;
//! - [`acl::Acl`]: the caller's conditions as one Chroma `where` of positive terms, one Qdrant
//!   filter, and a local check of returned metadata with the database's meaning;
//! - [`chroma`]: every v2 path the filter knows (anything else is refused), the caller's
//!   `where` wrapped as `{"$and": [ACL, caller]}` (no `$or`, empty or absent filter widens
//!   it), `include` extended with `metadatas` and stripped again, results re-checked, writes
//!   checked (metadata of added records, stored records of updated ones, merged metadata);
//! - [`qdrant`]: Qdrant REST reads (query with its prefetches, search, recommend, scroll,
//!   count, retrieve): the ACL AND-ed into every filter, payload fields requested and stripped
//!   again, returned points re-checked (engine tests over recorded bodies: no Qdrant server is
//!   available from the package registries); Qdrant writes are refused as unknown operations;
//! - [`filter::RagAcl`]: the proxy-wasm adapter (call-outs resolve collection ids and look up
//!   the records a write names), metrics by collection and operation, the audit record.

pub mod acl;
pub mod chroma;
pub mod filter;
pub mod policy;
pub mod qdrant;

pub use filter::RagAcl;

#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::RagAcl);
