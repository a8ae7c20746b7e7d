"""The web app's helpers, used only by `app.py`: what the page shows (`views`), where finished runs live
(`store`), one GPU call per token length on Hugging Face ZeroGPU (`zerogpu`) and the environment it reads
(`environment`). The engine never imports this package."""
