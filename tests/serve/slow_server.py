"""A service whose network takes SECONDS per image (2 in flight), served
as repseg-serve serves (``run_service``: uvicorn, its graceful shutdown):
``python tests/serve/slow_server.py PORT SECONDS``."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from repseg.serve.server import run_service  # noqa: E402
from tests.serve.helpers import fake_network, fake_service  # noqa: E402

if __name__ == '__main__':
    net, _ = fake_network(requests=2, sleep=float(sys.argv[2]))
    run_service(fake_service(net, port=int(sys.argv[1])))
