//! The web console (server-rendered HTML, no JavaScript).

use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::http::{self, Resp};
use crate::server::State;

pub async fn handle(_state: &State, _req: Request<Incoming>, _segments: &[&str]) -> Resp {
    http::html(StatusCode::NOT_FOUND, "<p>not found</p>".to_owned())
}
