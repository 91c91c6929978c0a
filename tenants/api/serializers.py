from __future__ import annotations

from rest_framework import serializers

from ..choices import Role
from ..models import ApiKey, Tenant


class TenantSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "slug", "name", "storage_quota_bytes", "is_active", "created_at"]
        read_only_fields = ["id", "created_at"]

    def validate(self, attrs):
        request = self.context.get("request")
        operator_only = {"slug", "storage_quota_bytes", "is_active"}
        if self.instance is not None and request and not request.user.is_superuser:
            changed = sorted(
                name
                for name in operator_only & attrs.keys()
                if attrs[name] != getattr(self.instance, name)
            )
            if changed:
                raise serializers.ValidationError(
                    {name: ["Only operators can change this field."] for name in changed}
                )
        return attrs


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "role",
            "created_by",
            "created_at",
            "last_used_at",
            "revoked_at",
            "is_active",
        ]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    def validate_name(self, value: str) -> str:
        request = self.context["request"]
        if ApiKey.objects.for_tenant(request.tenant).active().filter(name=value).exists():
            raise serializers.ValidationError("An active key with this name already exists.")
        return value
