"""Tutorial 7.2 (first half): task results stored on the local file system.

The base path is the tutorial's ``/tmp/prefect`` unless ``EXAMPLE_RESULTS_PATH`` says otherwise
(the tests point it at a temporary folder).
"""

import os

from blocks import flow, task  # noqa: F401 - as in the tutorial
from blocks.filesystems import LocalFileSystem
from serializers import JSONSerializer  # noqa: F401 - as in the tutorial

BASEPATH = os.environ.get("EXAMPLE_RESULTS_PATH", "/tmp/prefect")


# 로컬 파일 시스템
@task(result_storage=LocalFileSystem(basepath=BASEPATH))
def save_locally():
    return {"data": [1, 2, 3]}


if __name__ == "__main__":
    print(save_locally())
