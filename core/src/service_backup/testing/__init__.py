"""The conformance suite every destination plugin runs against a live destination.

Opt-in: nothing here is loaded unless a test module imports it. A plugin's tests subclass
``DestinationSuite``, name their type and supply a fixture that yields a config for a fresh,
empty location; the suite does the rest::

    from service_backup.testing import DestinationSuite, MiB

    class TestMyStore(DestinationSuite):
        destination_type = "mystore"

        @pytest.fixture
        def destination_config(self, my_server):
            yield {"url": my_server.url, "bucket": f"t-{uuid.uuid4().hex}", "token": "s3cret"}
"""

from .memory import current_rss, rss_peak
from .suite import AWKWARD_NAMES, DestinationSuite, MiB

__all__ = ["AWKWARD_NAMES", "DestinationSuite", "MiB", "current_rss", "rss_peak"]
