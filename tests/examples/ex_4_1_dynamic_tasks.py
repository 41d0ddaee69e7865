"""Tutorial 4.1: a dynamic number of tasks, called in turn or submitted in parallel."""

from blocks import flow, task


@task
def process_item(item: str) -> str:
    return f"Processed: {item}"


@flow
def dynamic_tasks_flow(items: list[str]):
    """동적으로 Task 수 결정"""
    results = []
    for item in items:
        result = process_item(item)
        results.append(result)
    return results


# 실행
dynamic_tasks_flow(["a", "b", "c", "d"])


# 병렬 실행 (.submit() 사용)
@flow
def parallel_tasks_flow(items: list[str]):
    """병렬로 Task 실행"""
    futures = []
    for item in items:
        # .submit()은 Future 반환 (비동기)
        future = process_item.submit(item)
        futures.append(future)

    # 결과 수집
    results = [f.result() for f in futures]
    return results


if __name__ == "__main__":
    print(dynamic_tasks_flow(["a", "b", "c", "d"]))
    print(parallel_tasks_flow(["a", "b", "c", "d"]))
