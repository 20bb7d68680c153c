"""Path parameter types of our own, registered with Starlette when imported. Serve's HTTP proxy
compiles every route's path again to tag requests with their route, so it imports this module
too (``api/proxy.py``): without it, one unknown convertor makes the proxy tag every request
with the route prefix only."""

from starlette.convertors import Convertor, register_url_convertor


class AssetIdConvertor(Convertor[str]):
    """An asset id in a path stops before a ``:`` (``…/{asset_id}:lock`` is not an asset id of
    ``GET …/{asset_id}``, so that route is not offered for it)."""

    regex = "ast_[0-9a-z]{26}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("asset_id", AssetIdConvertor())


class ScriptIdConvertor(AssetIdConvertor):
    """A script id in a path stops before a ``:`` (``…/{script_id}:compile``)."""

    regex = "scr_[0-9a-z]{26}"


class SceneIdConvertor(AssetIdConvertor):
    """A scene id in a path stops before a ``:`` (``…/{scene_id}:validate``)."""

    regex = "scn_[0-9a-z]{26}_[0-9]{3}"


class FrameIdConvertor(AssetIdConvertor):
    """A frame id in a path stops before a ``:`` (``…/{frame_id}:approve``)."""

    regex = "frm_[0-9a-z]{26}_[0-9]{3}_[0-9]{2}"


class ProjectIdConvertor(AssetIdConvertor):
    """A project id in a path stops before a ``:`` (``PATCH /v1/projects/{project_id}`` is not
    offered for ``…/{project_id}:generate-all``: another method there is a 405)."""

    regex = "prj_[0-9a-z]{26}"


class JobIdConvertor(AssetIdConvertor):
    """A job id (a ULID) in a path stops before a ``:`` (``…/renders/{render_job_id}:rerender``
    is not a render of ``GET …/renders/{render_job_id}``)."""

    regex = "[0-9A-HJKMNP-TV-Z]{26}"


register_url_convertor("project_id", ProjectIdConvertor())
register_url_convertor("job_id", JobIdConvertor())
register_url_convertor("script_id", ScriptIdConvertor())
register_url_convertor("scene_id", SceneIdConvertor())
register_url_convertor("frame_id", FrameIdConvertor())
