"""Tutorial 7.2 (second half): task results stored in S3 as JSON.

As in the tutorial: ``S3(bucket_path=...)`` and nothing else - credentials, region and
endpoint are ambient (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_DEFAULT_REGION``,
or a profile; ``AWS_ENDPOINT_URL=http://127.0.0.1:4566`` for LocalStack).
``EXAMPLE_S3_BUCKET_PATH`` overrides the tutorial's ``my-bucket/results``.
"""

import os

from blocks import flow, task  # noqa: F401 - as in the tutorial
from blocks.filesystems import S3
from serializers import JSONSerializer


# S3 저장소
@task(
    persist_result=True,
    result_storage=S3(bucket_path=os.environ.get("EXAMPLE_S3_BUCKET_PATH", "my-bucket/results")),
    result_serializer=JSONSerializer(),
)
def save_to_s3():
    return {"large": "data"}


if __name__ == "__main__":
    print(save_to_s3())
