# Docker Space or any host: docker build -t originality . && docker run -p 7860:7860 -v originality-data:/data -v originality-cache:/cache originality
FROM python:3.11-slim

RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data /cache \
    && chown user:user /data /cache
USER user
ENV PATH="/home/user/.local/bin:$PATH" \
    HOME=/home/user \
    ORIGINALITY_DATA_DIR=/data \
    ORIGINALITY_CACHE=/cache/originality \
    HF_HOME=/cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    PORT=7860 \
    PYTHONUNBUFFERED=1
WORKDIR /home/user/app

COPY --chown=user:user requirements.txt .
RUN pip install --no-cache-dir --user -r requirements.txt
COPY --chown=user:user . .

VOLUME ["/data", "/cache"]
EXPOSE 7860
CMD ["python", "app.py"]
