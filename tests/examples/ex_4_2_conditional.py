"""Tutorial 4.2: conditional branches on a task's result."""

from blocks import flow, task


@task
def check_condition(data: dict) -> bool:
    return data.get("count", 0) > 100


@task
def process_large(data: dict):
    print(f"Processing large dataset: {data['count']} records")


@task
def process_small(data: dict):
    print(f"Processing small dataset: {data['count']} records")


@flow
def conditional_flow(data: dict):
    """조건에 따른 분기"""
    is_large = check_condition(data)

    if is_large:
        process_large(data)
    else:
        process_small(data)


# 실행
conditional_flow({"count": 150})  # process_large 실행
conditional_flow({"count": 50})  # process_small 실행
