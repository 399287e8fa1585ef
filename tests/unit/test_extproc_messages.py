"""ext_proc messages: Envoy's full names and field numbers, checked against hand-encoded bytes."""

from __future__ import annotations

from inference_ext.extproc import messages as pb


def _encode(message: object) -> str:
    return pb.serialize(message).hex(" ")


def test_full_names_are_envoys() -> None:
    assert (
        pb.ProcessingRequest.DESCRIPTOR.full_name == "envoy.service.ext_proc.v3.ProcessingRequest"
    )
    assert pb.HeaderValue.DESCRIPTOR.full_name == "envoy.config.core.v3.HeaderValue"
    assert pb.HttpStatus.DESCRIPTOR.full_name == "envoy.type.v3.HttpStatus"
    assert (
        pb.ProcessingMode.DESCRIPTOR.full_name
        == "envoy.extensions.filters.http.ext_proc.v3.ProcessingMode"
    )
    assert pb.PROCESS_METHOD == "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


def test_processing_request_oneof_and_fields() -> None:
    # request_body = 4 (LEN): HttpBody{body = 1 "hi", end_of_stream = 2 true}
    body = pb.ProcessingRequest(request_body=pb.HttpBody(body=b"hi", end_of_stream=True))
    assert _encode(body) == "22 06 0a 02 68 69 10 01"
    # request_headers = 2: HttpHeaders{headers = 1: HeaderMap{headers = 1: HeaderValue{key = 1,
    # raw_value = 3}}, end_of_stream = 3}
    headers = pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=pb.header_map([("a", "b")]), end_of_stream=True)
    )
    assert _encode(headers) == "12 0c 0a 08 0a 06 0a 01 61 1a 01 62 18 01"
    assert _encode(pb.ProcessingRequest(response_headers=pb.HttpHeaders())) == "1a 00"
    assert _encode(pb.ProcessingRequest(response_body=pb.HttpBody())) == "2a 00"
    assert _encode(pb.ProcessingRequest(request_trailers=pb.HttpTrailers())) == "32 00"
    assert _encode(pb.ProcessingRequest(response_trailers=pb.HttpTrailers())) == "3a 00"
    # observability_mode = 10 (varint), protocol_config = 11: {request_body_mode = 1,
    # response_body_mode = 2} (FULL_DUPLEX_STREAMED = 4)
    config = pb.ProcessingRequest(
        observability_mode=True,
        protocol_config=pb.ProtocolConfiguration(
            request_body_mode=pb.FULL_DUPLEX_STREAMED, response_body_mode=pb.FULL_DUPLEX_STREAMED
        ),
    )
    assert _encode(config) == "50 01 5a 04 08 04 10 04"


def test_metadata_context_and_attributes_maps() -> None:
    request = pb.ProcessingRequest()
    request.metadata_context.filter_metadata["envoy.lb"].update({"k": "v"})
    # metadata_context = 8: Metadata{filter_metadata = 1: entry{key = 1, value = 2: Struct}}
    struct = "0a 08 0a 01 6b 12 03 1a 01 76"  # Struct{fields: {"k": {string_value = 3: "v"}}}
    entry = "0a 08 65 6e 76 6f 79 2e 6c 62 12 0a " + struct
    assert _encode(request) == "42 18 0a 16 " + entry
    attributes = pb.ProcessingRequest()
    attributes.attributes["x"].update({})
    assert _encode(attributes) == "4a 05 0a 01 78 12 00"  # attributes = 9


def test_processing_response_fields() -> None:
    # request_headers = 1: HeadersResponse{response = 1: CommonResponse{clear_route_cache = 5}}
    decision = pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=pb.CommonResponse(clear_route_cache=True))
    )
    assert _encode(decision) == "0a 04 0a 02 28 01"
    assert _encode(pb.ProcessingResponse(response_headers=pb.HeadersResponse())) == "12 00"
    assert _encode(pb.ProcessingResponse(response_body=pb.BodyResponse())) == "22 00"
    assert _encode(pb.ProcessingResponse(request_trailers=pb.TrailersResponse())) == "2a 00"
    assert _encode(pb.ProcessingResponse(response_trailers=pb.TrailersResponse())) == "32 00"
    # immediate_response = 7: {status = 1: HttpStatus{code = 1: 503}, body = 3, grpc_status = 4,
    # details = 5}
    refusal = pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=pb.HttpStatus(code=503),
            body=b"b",
            grpc_status=pb.GrpcStatus(status=14),
            details="d",
        )
    )
    assert _encode(refusal) == "3a 0f 0a 03 08 f7 03 1a 01 62 22 02 08 0e 2a 01 64"
    # dynamic_metadata = 8, mode_override = 9 {request_body_mode = 3}, request_drain = 12
    extra = pb.ProcessingResponse(
        mode_override=pb.ProcessingMode(request_body_mode=pb.FULL_DUPLEX_STREAMED),
        request_drain=True,
    )
    extra.dynamic_metadata.SetInParent()
    assert _encode(extra) == "42 00 4a 02 18 04 60 01"


def test_body_and_header_mutations() -> None:
    # request_body = 3: BodyResponse{response = 1: CommonResponse{body_mutation = 3:
    # BodyMutation{streamed_response = 3: {body = 1, end_of_stream = 2}}}}
    echo = pb.ProcessingResponse(
        request_body=pb.BodyResponse(
            response=pb.CommonResponse(
                body_mutation=pb.BodyMutation(
                    streamed_response=pb.StreamedBodyResponse(body=b"x", end_of_stream=True)
                )
            )
        )
    )
    assert _encode(echo) == "1a 0b 0a 09 1a 07 1a 05 0a 01 78 10 01"
    # HeaderMutation{set_headers = 1: HeaderValueOption{header = 1, append_action = 3},
    # remove_headers = 2}
    mutation = pb.set_headers([("a", "b")])
    mutation.remove_headers.append("x")
    assert _encode(mutation) == "0a 0a 0a 06 0a 01 61 1a 01 62 18 02 12 01 78"
    option = pb.HeaderValueOption(header=pb.HeaderValue(key="k", value="v"), keep_empty_value=True)
    assert _encode(option) == "0a 06 0a 01 6b 12 01 76 20 01"  # value = 2, keep_empty_value = 4
    status = pb.CommonResponse(status=pb.CommonResponse.CONTINUE_AND_REPLACE)
    assert _encode(status) == "08 01"


def test_round_trip_keeps_everything() -> None:
    response = pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(
            response=pb.CommonResponse(
                header_mutation=pb.set_headers(
                    [("x-gateway-destination-endpoint", "10.0.0.1:8000")]
                ),
                clear_route_cache=True,
            )
        )
    )
    response.dynamic_metadata.update({"envoy.lb": {"x-gateway-destination-endpoint": "a"}})
    again = pb.parse_response(pb.serialize(response))
    assert again == response
    assert (
        pb.struct_string(again.dynamic_metadata, "envoy.lb", "x-gateway-destination-endpoint")
        == "a"
    )
    assert pb.struct_string(again.dynamic_metadata, "envoy.lb", "other") is None
    assert pb.struct_string(again.dynamic_metadata, "none", "x") is None


def test_unknown_fields_survive() -> None:
    # override_message_timeout = 10 (a Duration we do not model) from a newer peer.
    data = bytes.fromhex("0a 00 52 02 08 05".replace(" ", ""))
    response = pb.parse_response(data)
    assert response.WhichOneof("response") == "request_headers"
    assert pb.serialize(response) == data


def test_header_value_prefers_raw_value() -> None:
    assert pb.header_value(pb.HeaderValue(key="a", value="v", raw_value=b"raw")) == "raw"
    assert pb.header_value(pb.HeaderValue(key="a", value="v")) == "v"


def test_status_code_is_open() -> None:
    teapot = pb.HttpStatus(code=418)  # not named in our subset of StatusCode
    assert pb.HttpStatus.FromString(pb.serialize(teapot)).code == 418
