"""Tutorial 3.3: flow options and task runners."""

from blocks import flow
from blocks.task_runners import ConcurrentTaskRunner, SequentialTaskRunner


@flow(
    name="My Flow",
    description="Flow 설명",
    version="1.0.0",
    retries=2,
    retry_delay_seconds=300,
    timeout_seconds=7200,
    task_runner=ConcurrentTaskRunner(),  # 병렬 실행
    log_prints=True,
    persist_result=True,  # 결과 저장
)
def my_flow():
    pass


# 순차 실행
@flow(task_runner=SequentialTaskRunner())
def sequential_flow():
    pass


if __name__ == "__main__":
    my_flow()
    sequential_flow()
