"""A hello-world wasi:http/proxy component, as a Python user writes it with componentize-py.

Every request gets `200 hello from python` (text/plain). Build: examples/python/build.sh.
"""

from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from componentize_py_types import Ok

BODY = b"hello from python\n"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        headers = Fields.from_list(
            [("content-type", b"text/plain"), ("content-length", str(len(BODY)).encode())]
        )
        response = OutgoingResponse(headers)
        body = response.body()
        ResponseOutparam.set(response_out, Ok(response))
        with body.write() as stream:
            stream.blocking_write_and_flush(BODY)
        OutgoingBody.finish(body, None)
