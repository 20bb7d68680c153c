# The image k8s/base/rayservice.yaml runs: Ray's own GPU image at the Ray version the project pins
# (pyproject.toml), with the project installed. Its working directory holds config/, which the
# Serve config's relative paths (souls_file, landmarks_file) name.
#   docker build -t soul-serve:ray2.60.0-py311-gpu .
FROM rayproject/ray:2.60.0-py311-gpu
WORKDIR /home/ray/soul-serve
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users serve_app serve_app
COPY --chown=ray:users deployments deployments
COPY --chown=ray:users config config
RUN pip install --no-cache-dir .
