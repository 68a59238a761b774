//! The public API's handle: one `Api` value serves the Cluster, KV, Watch and State services,
//! each implemented in its own file (`cluster.rs`, `kv.rs`, `watch.rs`, `state.rs`). The
//! handlers translate the wire types, check the input (`validate.rs`) and delegate to the
//! member (`Node`): they decide nothing themselves.

use std::sync::Arc;

use crate::node::Node;

#[derive(Clone)]
pub struct Api {
    pub(super) node: Arc<Node>,
}

impl Api {
    pub fn new(node: Arc<Node>) -> Self {
        Api { node }
    }
}
