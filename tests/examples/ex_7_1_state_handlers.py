"""Tutorial 7.1: state handlers (on_failure hooks) on a task and on a flow."""

from blocks import flow, task
from blocks.states import Completed, Failed, State  # noqa: F401 - as in the tutorial


def custom_state_handler(task, task_run, state: State):
    """Task 상태 변경 시 호출"""
    if state.is_failed():
        # 슬랙 알림 등
        print(f"Task {task.name} failed!")
    return state


@task(on_failure=[custom_state_handler])
def risky_task():
    raise ValueError("Something went wrong")


# Flow 레벨 핸들러
@flow(on_failure=[lambda flow, flow_run, state: print("Flow failed!")])
def my_flow():
    risky_task()


if __name__ == "__main__":
    my_flow()
