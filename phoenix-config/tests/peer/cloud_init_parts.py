"""Reads user data the way cloud-init does at boot, with cloud-init's own
code, for the peer tests of phoenix-config.

    cloud_init_parts.py parts USER_DATA OUT_DIR [VMWARE_ENCODING]
        Decodes USER_DATA as the VMware datasource does when an encoding
        is given (base64, gzip+base64), then splits it with
        cloudinit.user_data.UserDataProcessor (which also gunzips and
        walks multi-part MIME), writes each part into OUT_DIR and prints
        one JSON object per part: {"type", "filename", "path"}.

    cloud_init_parts.py vmware-metadata FILE ENCODING
        Decodes and parses guestinfo.metadata as the VMware datasource
        does, and prints it as JSON.
"""

import json
import os
import sys
import tempfile

from cloudinit import user_data as ud
from cloudinit.helpers import Paths
from cloudinit.sources import DataSourceVMware as vmware


def parts(source, out_dir, encoding=None):
    with open(source, "rb") as f:
        data = f.read()
    if encoding:
        data = vmware.decode("guestinfo.userdata", encoding, data.decode()).encode()
    scratch = tempfile.mkdtemp()
    paths = Paths({"cloud_dir": scratch, "run_dir": scratch})
    message = ud.UserDataProcessor(paths).process(data)
    n = 0
    for part in message.walk():
        if part.get_content_maintype() == "multipart":
            continue
        n += 1
        path = os.path.join(out_dir, "part-%03d" % n)
        with open(path, "wb") as f:
            f.write(part.get_payload(decode=True))
        print(json.dumps({
            "type": part.get_content_type(),
            "filename": part.get_filename(),
            "path": path,
        }))


def vmware_metadata(source, encoding):
    with open(source, "r") as f:
        data = f.read()
    decoded = vmware.decode("guestinfo.metadata", encoding, data)
    print(json.dumps(vmware.load_json_or_yaml(decoded)))


if __name__ == "__main__":
    if sys.argv[1] == "parts":
        parts(*sys.argv[2:])
    elif sys.argv[1] == "vmware-metadata":
        vmware_metadata(*sys.argv[2:])
    else:
        sys.exit("unknown mode " + sys.argv[1])
