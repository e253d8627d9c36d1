//! Typed handlers behind one object-safe face: a response's `Any`s are decoded into the
//! handler's message type here, so the stream deals with bytes only and every handler with its
//! own type only. A resource that does not decode rejects the whole response.

use super::Subscriptions;
use crate::xds::Handler;
use envoy_types::pb::google::protobuf::Any;
use std::marker::PhantomData;
use std::sync::Arc;

/// A [`Handler`] for one type URL, taking the response's resources still encoded.
pub(super) trait DecodingHandler: Send + Sync + 'static {
    fn handle(&self, resources: Vec<Any>, subscriptions: &Subscriptions) -> Result<(), String>;
}

pub(super) struct Typed<M, H> {
    type_url: &'static str,
    handler: Arc<H>,
    // `fn() -> M`: the handler produces nothing of M to store, so M need not be Send or Sync.
    message: PhantomData<fn() -> M>,
}

impl<M, H> Typed<M, H> {
    pub(super) fn new(type_url: &'static str, handler: Arc<H>) -> Self {
        Self {
            type_url,
            handler,
            message: PhantomData,
        }
    }
}

impl<M, H> DecodingHandler for Typed<M, H>
where
    M: prost::Message + Default + prost::Name + 'static,
    H: Handler<M>,
{
    fn handle(&self, resources: Vec<Any>, subscriptions: &Subscriptions) -> Result<(), String> {
        let decoded = resources
            .into_iter()
            .enumerate()
            .map(|(i, any)| decode::<M>(self.type_url, i, &any))
            .collect::<Result<Vec<M>, String>>()?;
        self.handler.handle(decoded, subscriptions)
    }
}

fn decode<M: prost::Message + Default + prost::Name>(
    type_url: &str,
    index: usize,
    any: &Any,
) -> Result<M, String> {
    if any.type_url != type_url {
        return Err(format!(
            "resource {index}: type {} in a response of type {type_url}",
            any.type_url
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| format!("resource {index}: not a valid {}: {e}", M::full_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::client::CLUSTER;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use prost::Message;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Names(Mutex<Vec<String>>);

    impl Handler<Cluster> for Names {
        fn handle(&self, clusters: Vec<Cluster>, _: &Subscriptions) -> Result<(), String> {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
                clusters.into_iter().map(|c| c.name).collect();
            Ok(())
        }
    }

    fn cluster(name: &str) -> Any {
        Any {
            type_url: CLUSTER.into(),
            value: Cluster {
                name: name.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    fn names_of(h: &Names) -> Vec<String> {
        h.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn decodes_every_resource_in_order() {
        let names = Arc::new(Names::default());
        let typed = Typed::<Cluster, _>::new(CLUSTER, names.clone());
        let result = typed.handle(vec![cluster("a"), cluster("b")], &Subscriptions::default());
        assert_eq!(result, Ok(()));
        assert_eq!(names_of(&names), ["a", "b"]);
    }

    #[test]
    fn a_foreign_type_rejects_the_response_and_names_the_resource() {
        let names = Arc::new(Names::default());
        let typed = Typed::<Cluster, _>::new(CLUSTER, names.clone());
        let foreign = Any {
            type_url: "type.googleapis.com/envoy.config.listener.v3.Listener".into(),
            value: vec![],
        };
        let err = typed
            .handle(vec![cluster("a"), foreign], &Subscriptions::default())
            .unwrap_err();
        assert!(
            err.starts_with(
                "resource 1: type type.googleapis.com/envoy.config.listener.v3.Listener"
            ),
            "{err}"
        );
        assert!(names_of(&names).is_empty(), "the handler saw nothing");
    }

    #[test]
    fn undecodable_bytes_reject_the_response_and_name_the_resource() {
        let names = Arc::new(Names::default());
        let typed = Typed::<Cluster, _>::new(CLUSTER, names.clone());
        let garbage = Any {
            type_url: CLUSTER.into(),
            value: vec![0x0a, 0xff], // field 1, length 255, no bytes
        };
        let err = typed
            .handle(vec![garbage], &Subscriptions::default())
            .unwrap_err();
        assert!(
            err.starts_with("resource 0: not a valid envoy.config.cluster.v3.Cluster"),
            "{err}"
        );
        assert!(names_of(&names).is_empty());
    }
}
