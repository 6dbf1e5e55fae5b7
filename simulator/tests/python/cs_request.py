"""Calls the simulated zone with the `cs` package (PyPI), an independent CloudStack client.

Usage: cs_request.py ENDPOINT API_KEY SECRET_KEY

Makes a GET (listZones), a GET whose value needs escaping (listConfigurations with a dotted
name), and a POST (updateConfiguration), and prints one JSON line per call; then checks that a
request cs signs with `~` in a value is refused with 401, as the real server refuses it. Exits non-zero,
printing the error, if any call fails.
"""

import json
import sys

from cs import CloudStack, CloudStackApiException


def main() -> int:
    endpoint, key, secret = sys.argv[1:4]
    api = CloudStack(endpoint=endpoint, key=key, secret=secret, timeout=10)
    post = CloudStack(endpoint=endpoint, key=key, secret=secret, timeout=10, method="post")
    try:
        zones = api.listZones(available=True)
        print(json.dumps({"listZones": zones}))
        sites = api.listConfigurations(name="secstorage.allowed.internal.sites")
        print(json.dumps({"listConfigurations": sites}))
        updated = post.updateConfiguration(name="network.gc.interval", value="700 s+1/2*x")
        print(json.dumps({"updateConfiguration": updated}))
    except CloudStackApiException as e:
        print(f"CloudStack error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # connection problems and the like
        print(f"error: {e!r}", file=sys.stderr)
        return 3
    # cs 5.2.0 signs `~` unescaped where the server escapes it (signing vector v10): a faithful
    # server refuses that request.
    try:
        api.listVirtualMachines(keyword="~backup", listall=True)
        print("error: a request cs signed with `~` unescaped was accepted", file=sys.stderr)
        return 4
    except CloudStackApiException as e:
        if "401" not in str(e):
            print(f"error: expected 401 for the `~` request, got {e}", file=sys.stderr)
            return 4
        print(json.dumps({"tilde": "refused with 401, as the management server does"}))
    except CloudStackApiException as e:
        print(f"CloudStack error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # connection problems and the like
        print(f"error: {e!r}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
