"""Tutorial 7.2 (second half): task results stored in S3 as JSON.

Credentials are ambient (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` or a profile), as
in the tutorial. ``AWS_ENDPOINT_URL`` points it at LocalStack (``http://127.0.0.1:4566``) and
``EXAMPLE_S3_BUCKET_PATH`` overrides the tutorial's ``my-bucket/results``.
"""

import os

from blocks import flow, task  # noqa: F401 - as in the tutorial
from blocks.filesystems import S3
from serializers import JSONSerializer


# S3 저장소
@task(
    persist_result=True,
    result_storage=S3(
        bucket_path=os.environ.get("EXAMPLE_S3_BUCKET_PATH", "my-bucket/results"),
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
    ),
    result_serializer=JSONSerializer(),
)
def save_to_s3():
    return {"large": "data"}


if __name__ == "__main__":
    print(save_to_s3())
