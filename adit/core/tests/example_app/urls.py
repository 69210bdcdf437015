from adit.core.job_views import job_urlpatterns

from .models import ExampleJob, ExampleTask

app_name = "example_app"

urlpatterns = job_urlpatterns(job_model=ExampleJob, task_model=ExampleTask)
