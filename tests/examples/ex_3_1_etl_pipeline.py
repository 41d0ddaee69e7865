"""Tutorial 3.1: a basic flow of three tasks (extract, transform, load)."""

from blocks import flow, task
from blocks.logging import get_run_logger


# Task 정의
@task
def extract_data(source: str) -> dict:
    """데이터 추출 Task"""
    logger = get_run_logger()
    logger.info(f"Extracting from {source}")

    # 실제로는 DB, API 등에서 추출
    data = {"source": source, "records": [1, 2, 3, 4, 5]}
    return data


@task
def transform_data(data: dict) -> dict:
    """데이터 변환 Task"""
    logger = get_run_logger()
    logger.info(f"Transforming {len(data['records'])} records")

    # 변환 로직
    data["records"] = [x * 2 for x in data["records"]]
    data["transformed"] = True
    return data


@task
def load_data(data: dict, destination: str) -> bool:
    """데이터 적재 Task"""
    logger = get_run_logger()
    logger.info(f"Loading to {destination}")

    # 실제로는 DB, 파일 등에 저장
    print(f"Loaded data: {data}")
    return True


# Flow 정의
@flow(name="ETL Pipeline")
def etl_pipeline(source: str = "database", destination: str = "warehouse"):
    """ETL 파이프라인 Flow"""
    # Task 실행 (자동 의존성 관리)
    raw_data = extract_data(source)
    transformed = transform_data(raw_data)
    result = load_data(transformed, destination)
    return result


# 로컬 실행
if __name__ == "__main__":
    etl_pipeline()
