//! The ADS gRPC service, written out by hand so that responses go through Sluice's own encoder.
//!
//! The generated envoy-types service would need `DiscoveryResponse` values, whose resources own
//! a copy of their bytes: every connection would copy every resource it is sent. Here the
//! responses hold the snapshot's shared resources ([`SotwResponse`], [`DeltaResponse`]) and
//! [`ResponseEncoder`] writes them straight into tonic's outgoing buffer. Requests are decoded
//! by prost as usual.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstDecoder;

use super::{AdsServer, Protocol};
use crate::protocol::{Connection, DeltaConnection, Encode};

const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The tonic service of [`AdsServer`]: `StreamAggregatedResources` and
/// `DeltaAggregatedResources`. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AdsService {
    server: AdsServer,
}

impl AdsService {
    pub(super) fn new(server: AdsServer) -> Self {
        AdsService { server }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        match request.uri().path() {
            SOTW_PATH => Box::pin(stream::<Connection, B>(server, request)),
            DELTA_PATH => Box::pin(stream::<DeltaConnection, B>(server, request)),
            _ => Box::pin(async { Ok(unimplemented()) }),
        }
    }
}

/// Runs one ADS stream of protocol `P` over gRPC.
async fn stream<P: Protocol, B>(
    server: AdsServer,
    request: http::Request<B>,
) -> Result<http::Response<Body>, Infallible>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    let method = Method::<P> {
        server,
        protocol: PhantomData,
    };
    let mut grpc = Grpc::new(AdsCodec::<P>(PhantomData));
    Ok(grpc.streaming(method, request).await)
}

/// The gRPC answer to a method this service does not have.
fn unimplemented() -> http::Response<Body> {
    let mut response = http::Response::new(Body::default());
    let headers = response.headers_mut();
    headers.insert(Status::GRPC_STATUS, (Code::Unimplemented as i32).into());
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

/// One of the two ADS methods: starts the stream task for protocol `P`.
struct Method<P> {
    server: AdsServer,
    protocol: PhantomData<fn() -> P>,
}

impl<P: Protocol> StreamingService<P::Request> for Method<P> {
    type Response = P::Response;
    type ResponseStream = ReceiverStream<Result<P::Response, Status>>;
    type Future = Ready<Result<Response<Self::ResponseStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<P::Request>>) -> Self::Future {
        ready(Ok(self.server.spawn_stream::<P>(request)))
    }
}

/// Protocol `P`'s requests decoded by prost, its responses written by [`ResponseEncoder`].
struct AdsCodec<P>(PhantomData<fn() -> P>);

impl<P: Protocol> Codec for AdsCodec<P> {
    type Encode = P::Response;
    type Decode = P::Request;
    type Encoder = ResponseEncoder<P::Response>;
    type Decoder = ProstDecoder<P::Request>;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes an [`Encode`] response into the gRPC frame buffer.
struct ResponseEncoder<T>(PhantomData<fn(T)>);

impl<T: Encode> Encoder for ResponseEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation for the whole message rather than growing as it is written.
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}
