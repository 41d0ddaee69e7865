"""Tutorial 3.2: task options, and dynamic retries with exponential backoff."""

from datetime import timedelta

from blocks import task


@task(
    name="My Task",
    description="Task 설명",
    tags=["etl", "production"],
    retries=3,  # 재시도 횟수
    retry_delay_seconds=60,  # 재시도 대기 시간
    timeout_seconds=3600,  # 타임아웃
    cache_key_fn=lambda: "static_key",  # 캐시 키
    cache_expiration=timedelta(hours=1),  # 캐시 만료
    log_prints=True,  # print 문을 로그로 캡처
)
def my_task(param: str) -> str:
    print(f"Processing: {param}")
    return f"Result: {param}"


# 동적 재시도 (exponential backoff)
from blocks.tasks import exponential_backoff  # noqa: E402


@task(
    retries=5,
    retry_delay_seconds=exponential_backoff(backoff_factor=10),
)
def flaky_task():
    """불안정한 외부 API 호출"""
    import random

    if random.random() < 0.7:
        raise Exception("Random failure")
    return "Success"


if __name__ == "__main__":
    print(my_task("hello"))
