"""Tutorial 5.1: a deployment made and applied from Python (only the imports changed)."""

from blocks import flow
from blocks.deployments import Deployment
from blocks.schedules import CronSchedule


@flow
def my_etl_flow(date: str = None):
    """일일 ETL 플로우"""
    from datetime import datetime

    date = date or datetime.now().strftime("%Y-%m-%d")
    print(f"Running ETL for {date}")


# 방법 1: Python으로 Deployment 생성
deployment = Deployment.build_from_flow(
    flow=my_etl_flow,
    name="daily-etl",
    version="1.0",
    tags=["production", "etl"],
    schedule=CronSchedule(cron="0 6 * * *"),  # 매일 오전 6시
    parameters={"date": None},
    work_pool_name="default-agent-pool",
)

# Deployment 적용
deployment.apply()
