"""serializers"""
