"""Tutorial 4.3: subflows orchestrated by a main flow."""

from blocks import flow, task


@task
def extract(source: str) -> list:
    return [1, 2, 3, 4, 5]


@task
def transform(data: list) -> list:
    return [x * 2 for x in data]


@task
def load(data: list, target: str):
    print(f"Loading {len(data)} records to {target}")


# 서브플로우 정의
@flow(name="ETL Subflow")
def etl_subflow(source: str, target: str):
    """재사용 가능한 ETL 서브플로우"""
    data = extract(source)
    transformed = transform(data)
    load(transformed, target)
    return len(transformed)


# 메인 플로우
@flow(name="Main Pipeline")
def main_pipeline():
    """여러 서브플로우 오케스트레이션"""
    # 서브플로우 호출
    count_a = etl_subflow("source_a", "target_a")
    count_b = etl_subflow("source_b", "target_b")
    count_c = etl_subflow("source_c", "target_c")

    print(f"Total processed: {count_a + count_b + count_c}")


main_pipeline()
