# httpfstream in a container: the wheel built from this tree, run by a user
# of its own, with the storage root on a volume.
#   docker build -t httpfstream .
#   docker run -d --name httpfstream -p 8080:8080 -v httpfstream-data:/data httpfstream
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN python -m pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin httpfstream \
    && mkdir /data && chown httpfstream:httpfstream /data
COPY --from=build /dist /dist
# Install, then write twistd's plugin cache while site-packages is writable.
RUN python -m pip install --no-cache-dir /dist/*.whl && rm -rf /dist \
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"
USER httpfstream
VOLUME /data
EXPOSE 8080
# Any HTTP answer (even 401 with --auth) means the server is serving.
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import http.client as h; c = h.HTTPConnection('127.0.0.1', 8080, timeout=4); c.request('HEAD', '/'); c.getresponse()"]
CMD ["twistd", "-n", "--pidfile=", "httpfstream", "--root", "/data", "--port", "tcp:8080"]
