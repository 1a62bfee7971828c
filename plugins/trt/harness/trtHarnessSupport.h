/*
 * trtHarnessSupport.h: what the two test programs of the plugin library share (the interface driver,
 * interfaceDriver.cpp, and the enqueue harness, enqueueHarness.cpp). They stand in for TensorRT:
 * they load libsrdeploy_trt_plugins.so as TensorRT's plugin registry does (dlopen, getCreators),
 * make field collections as its ONNX parser does (INT -> kINT32, FLOAT -> kFLOAT32) and answer
 * getOutputShapes with an IExprBuilder whose expressions are constants (known dims).
 */
#ifndef SRDEPLOY_TRT_HARNESS_SUPPORT_H
#define SRDEPLOY_TRT_HARNESS_SUPPORT_H

#include "NvInferRuntime.h"

#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace srdeploy
{
namespace harness
{

using namespace nvinfer1;

//! A dimension expression that is a known constant (TensorRT's own sit behind mImpl too).
class ConstantExpr : public IDimensionExpr
{
public:
    explicit ConstantExpr(int64_t value)
    {
        mValue.value = value;
        mImpl = &mValue;
    }

private:
    struct Value : apiv::VDimensionExpr
    {
        int64_t value{};
        bool isConstant() const override
        {
            return true;
        }
        int64_t getConstantValue() const override
        {
            return value;
        }
        bool isSizeTensor() const override
        {
            return false;
        }
    } mValue;
};

//! An IExprBuilder over constants: operation() computes the value (nullptr for an operation on
//! unknown dims, which these programs never give).
class ConstantExprBuilder : public IExprBuilder
{
public:
    ConstantExprBuilder()
    {
        mImpl = &mBuilder;
    }

    //! The dims as expressions.
    DimsExprs exprs(std::vector<int64_t> const& dims)
    {
        DimsExprs e{};
        e.nbDims = static_cast<int32_t>(dims.size());
        for (size_t i = 0; i < dims.size(); ++i)
        {
            e.d[i] = constant(dims[i]);
        }
        return e;
    }

private:
    struct Builder : apiv::VExprBuilder
    {
        std::deque<std::unique_ptr<ConstantExpr>> pool;
        IDimensionExpr const* constant(int64_t v) override
        {
            pool.emplace_back(new ConstantExpr(v));
            return pool.back().get();
        }
        IDimensionExpr const* operation(
            DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
        {
            int64_t const x = first.getConstantValue();
            int64_t const y = second.getConstantValue();
            switch (op)
            {
            case DimensionOperation::kSUM: return constant(x + y);
            case DimensionOperation::kPROD: return constant(x * y);
            case DimensionOperation::kSUB: return constant(x - y);
            case DimensionOperation::kMAX: return constant(x > y ? x : y);
            case DimensionOperation::kMIN: return constant(x < y ? x : y);
            case DimensionOperation::kFLOOR_DIV: return y == 0 ? nullptr : constant(x / y);
            default: return nullptr;
            }
        }
        IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
        {
            return nullptr;
        }
    } mBuilder;
};

//! The values of constant expressions (-999 where an expression is missing).
inline std::vector<int64_t> values(DimsExprs const& e)
{
    std::vector<int64_t> v;
    for (int32_t i = 0; i < e.nbDims; ++i)
    {
        v.push_back(e.d[i] != nullptr ? e.d[i]->getConstantValue() : -999);
    }
    return v;
}

inline Dims toDims(std::vector<int64_t> const& d)
{
    Dims x{};
    x.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        x.d[i] = d[i];
    }
    return x;
}

//! A LINEAR tensor of the profile min = opt = dims, max = maxDims (dims when empty).
inline DynamicPluginTensorDesc dynamicDesc(
    std::vector<int64_t> const& dims, DataType type, std::vector<int64_t> const& maxDims = {})
{
    DynamicPluginTensorDesc x{};
    x.desc.type = type;
    x.desc.format = TensorFormat::kLINEAR;
    x.desc.dims = toDims(dims);
    x.min = x.opt = x.desc.dims;
    x.max = maxDims.empty() ? x.desc.dims : toDims(maxDims);
    return x;
}

//! Attributes as TensorRT's ONNX parser passes them: INT -> kINT32, FLOAT -> kFLOAT32.
class Fields
{
public:
    Fields& i(char const* name, int32_t v)
    {
        mNames.emplace_back(name);
        mInts.push_back(v);
        mFields.emplace_back(mNames.back().c_str(), &mInts.back(), PluginFieldType::kINT32, 1);
        return *this;
    }
    Fields& x(char const* name, float v)
    {
        mNames.emplace_back(name);
        mFloats.push_back(v);
        mFields.emplace_back(mNames.back().c_str(), &mFloats.back(), PluginFieldType::kFLOAT32, 1);
        return *this;
    }
    PluginFieldCollection const* get()
    {
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
        return &mCollection;
    }

private:
    std::deque<std::string> mNames; // deques: pointers into them stay valid as they grow
    std::deque<int32_t> mInts;
    std::deque<float> mFloats;
    std::vector<PluginField> mFields;
    PluginFieldCollection mCollection{};
};

inline IPluginV3OneCore* core(IPluginV3* p)
{
    return static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
}
inline IPluginV3OneBuild* build(IPluginV3* p)
{
    return static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
}
inline IPluginV3OneRuntime* runtime(IPluginV3* p)
{
    return static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
}

//! The plugin library as TensorRT's registry loads it: dlopen, then its two exported entry points.
class PluginLibrary
{
public:
    explicit PluginLibrary(std::string const& path)
    {
        mHandle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (mHandle == nullptr)
        {
            throw std::runtime_error(std::string("cannot load the plugin library: ") + dlerror());
        }
        using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
        auto getCreators = reinterpret_cast<GetCreators>(dlsym(mHandle, "getCreators"));
        mSetLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(mHandle, "setLoggerFinder"));
        if (getCreators == nullptr || mSetLoggerFinder == nullptr)
        {
            throw std::runtime_error(path + " does not export getCreators and setLoggerFinder");
        }
        int32_t n = 0;
        IPluginCreatorInterface* const* creators = getCreators(n);
        for (int32_t k = 0; k < n; ++k)
        {
            mAll.push_back(creators[k]);
            if (std::strcmp(creators[k]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0)
            {
                auto* c = static_cast<IPluginCreatorV3One*>(creators[k]);
                mByName[c->getPluginName()] = c;
            }
        }
    }
    ~PluginLibrary()
    {
        // Not dlclose()d: the creators are statics of the library and plugins may outlive this object.
    }
    PluginLibrary(PluginLibrary const&) = delete;
    PluginLibrary& operator=(PluginLibrary const&) = delete;

    //! Every creator getCreators() returned, in its order.
    std::vector<IPluginCreatorInterface*> const& all() const
    {
        return mAll;
    }
    //! The IPluginCreatorV3One named op, or nullptr.
    IPluginCreatorV3One* creator(std::string const& op) const
    {
        auto it = mByName.find(op);
        return it == mByName.end() ? nullptr : it->second;
    }
    void setLoggerFinder(ILoggerFinder* finder) const
    {
        mSetLoggerFinder(finder);
    }

private:
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    void* mHandle{nullptr};
    SetLoggerFinder mSetLoggerFinder{nullptr};
    std::vector<IPluginCreatorInterface*> mAll;
    std::map<std::string, IPluginCreatorV3One*> mByName;
};

} // namespace harness
} // namespace srdeploy

#endif // SRDEPLOY_TRT_HARNESS_SUPPORT_H
