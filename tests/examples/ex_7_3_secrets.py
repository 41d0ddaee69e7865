"""Tutorial 7.3: secrets from a saved Secret block, or from an environment variable."""

import os

from blocks import task
from blocks.system import Secret

# Block으로 비밀 저장 (UI 또는 CLI)
# block register -m blocks.system


# 코드에서 사용
@task
def use_secret():
    api_key = Secret.load("my-api-key").get()
    # API 호출에 사용
    return f"Using key: {api_key[:4]}..."


# 환경 변수 사용
@task
def use_env_var():
    return os.getenv("MY_SECRET")


if __name__ == "__main__":
    print(use_env_var())
